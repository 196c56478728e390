#!/usr/bin/env bash
# Applies our patches to dependencies. `patches/<crate>-<version>/*.patch` are
# applied in name order to that crate's crates.io source, unpacked in
# `target/patched/<crate>-<version>`, which `[patch.crates-io]` in Cargo.toml
# points at. Cargo cannot resolve the workspace until these directories
# exist, so this runs before any cargo command on it (setup.sh calls it).
# Idempotent: a crate is unpacked and patched again only when its patches
# changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*" >&2; }

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
patched=target/patched

# The crate's .crate archive from Cargo's download cache; a throwaway package
# that depends on exactly this version has cargo download it when missing.
crate_archive() {
    local crate="$1" version="$2" archive
    archive="$(find "$cargo_home/registry/cache" -name "$crate-$version.crate" 2>/dev/null | head -n1)"
    if [ -z "$archive" ]; then
        local fetcher="$patched/.fetch-$crate-$version"
        mkdir -p "$fetcher/src"
        : >"$fetcher/src/lib.rs"
        cat >"$fetcher/Cargo.toml" <<EOF
[package]
name = "fetch-patched-source"
version = "0.0.0"
edition = "2021"

[dependencies]
$crate = "=$version"

[workspace]
EOF
        cargo fetch --quiet --manifest-path "$fetcher/Cargo.toml" >&2
        rm -rf "$fetcher"
        archive="$(find "$cargo_home/registry/cache" -name "$crate-$version.crate" | head -n1)"
    fi
    [ -n "$archive" ] || { echo "error: cannot download $crate $version from crates.io" >&2; exit 1; }
    echo "$archive"
}

for dir in patches/*/; do
    name="$(basename "$dir")"
    crate="${name%-*}"
    version="${name##*-}"
    dest="$patched/$name"
    stamp="$(cat "$dir"*.patch | sha256sum | cut -d' ' -f1)"
    if [ -f "$dest/.switchboard-patches" ] && [ "$(cat "$dest/.switchboard-patches")" = "$stamp" ]; then
        continue
    fi
    step "patch $crate $version"
    archive="$(crate_archive "$crate" "$version")"
    rm -rf "$dest"
    mkdir -p "$patched"
    tar -xzf "$archive" -C "$patched"
    for patch in "$dir"*.patch; do
        patch --quiet --forward --strip=1 --directory="$dest" <"$patch"
    done
    echo "$stamp" >"$dest/.switchboard-patches"
done
