#!/bin/sh
# Prints the names of the functions the public headers declare with DFM_API, sorted.
cat "${1:-include/dfm}"/*.h | tr '\n' ' ' | tr ';' '\n' | grep 'DFM_API' |
    sed -n 's/.*[ *]\(dfm_[a-z0-9_]*\) *(.*/\1/p' | sort -u
