#![no_std]
// The programs live in main.rs (the bin target aya-build links); this empty library lets the
// package be a build-dependency of cluster-ctl so cargo rebuilds on changes.
