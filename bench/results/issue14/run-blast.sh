#!/bin/sh
# The blast matrix of issue 14, in one session: this branch (new) and old main
# (18661ac, built in a separate worktree), then the new build with the fault layer,
# with the flood limiter and without GSO. Each: --duration 5s --runs 3.
NEW=/work/wt14/target/release/plumcore
OLD=/work/old14/target/release/plumcore
run() { name=$1; shift; { uptime; echo "\$ plumcore bench blast --duration 5s --runs 3 $* --json blast-$name.json   ($name)"; "$@" ; } > blast-$name.txt 2>&1; }
run new      $NEW bench blast --duration 5s --runs 3 --json blast-new.json
run old      $OLD bench blast --duration 5s --runs 3 --json blast-old.json
run new-chaos $NEW bench blast --duration 5s --runs 3 --chaos --json blast-new-chaos.json
run new-ratelimit $NEW bench blast --duration 5s --runs 3 --rate-limit --json blast-new-ratelimit.json
run new-nogso $NEW bench blast --duration 5s --runs 3 --no-gso --json blast-new-nogso.json
run old-2    $OLD bench blast --duration 5s --runs 3 --json blast-old-2.json
run new-2    $NEW bench blast --duration 5s --runs 3 --json blast-new-2.json
