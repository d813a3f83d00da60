package net

// refuseAllPuts is set only in binaries built with the freeloader tag
// (freeloader.go): the shard server then refuses every PUT.
var refuseAllPuts bool
