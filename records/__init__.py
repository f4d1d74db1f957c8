"""echobench's ground floor: what every other package reads and writes, and nothing else.

`records.schema` is the one versioned result format and its reader, `records.micro` the
reader of the microbenchmark files, `records.loadargs` a load's one check and command line,
`records.hist` the HdrHistogram encode/decode/merge every writer and reader shares,
`records.procfs` the /proc readers, `records.cpulist` the one CPU-list syntax. Nothing here
imports servers, loadgen, bench, microbench or analysis: data flows one way, profile -> runner
-> records -> analysis -> report.
"""
