module stepper

go 1.21
