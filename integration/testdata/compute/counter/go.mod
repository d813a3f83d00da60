module counter

go 1.22
