#!/usr/bin/env bash
# Puts a bitcoind for the tests, the demo and the bench at .tools/bin/bitcoind (the ignored folder .tools/).
#
# A bitcoind 29 or newer already on PATH is used as it is. Otherwise Debian's bitcoin-knots, pinned below, is
# downloaded by package name from Debian sid with apt-get under a private configuration in .tools/apt (the
# machine's own apt sources, lists and cache are neither read for sources nor written), unpacked with dpkg -x
# into .tools/bitcoin with the libraries it needs, and run by a wrapper through sid's own dynamic loader: sid's
# libstdc++ needs a newer glibc than bookworm's 2.36, so the system's loader cannot run it.
set -euo pipefail

# When this version leaves sid, pick the one `apt-cache madison bitcoin-knots` lists there and put it here.
PIN=29.4.knots20260508.3-1
MIN_MAJOR=29
# What bitcoind and its libzmq link against (readelf -d), from sid as well: its glibc and libstdc++ are newer
# than bookworm's, and a machine may have none of the others. Not pinned: sid replaces them often and each
# keeps its ABI; the check at the end proves every library resolves inside .tools/bitcoin.
LIBS=(libc6 libstdc++6 libgcc-s1 libevent-core-2.1-7t64 libevent-extra-2.1-7t64 libevent-pthreads-2.1-7t64
    libsqlite3-0 libzmq5 libsodium26 libpgm-5.3-0t64 libnorm1t64 libbsd0 libmd0 libgssapi-krb5-2 libkrb5-3
    libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libssl3t64)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$ROOT/.tools
BIN=$TOOLS/bin
mkdir -p "$BIN"

major_of() { # the major version a bitcoind reports, or 0
    "$1" -version 2>/dev/null | sed -n '1s/.*version v\{0,1\}\([0-9][0-9]*\)\..*/\1/p' | grep . || echo 0
}

existing=$(PATH=$(printf %s "$PATH" | tr : '\n' | grep -vxF "$BIN" | paste -sd:) command -v bitcoind || true)
if [ -n "$existing" ] && [ "$(major_of "$existing")" -ge "$MIN_MAJOR" ]; then
    ln -sfn "$existing" "$BIN/bitcoind"
    echo "fetch-bitcoind: using $existing ($("$existing" -version | head -1))"
    exit 0
fi

APT=$TOOLS/apt
mkdir -p "$APT/etc" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
    >"$APT/etc/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$APT/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache"
    -o APT::Sandbox::User=root
)
apt-get -qq "${apt_opts[@]}" update
if ! apt-cache "${apt_opts[@]}" madison bitcoin-knots | grep -qF " $PIN "; then
    echo "fetch-bitcoind: bitcoin-knots $PIN is no longer in Debian sid; sid has:" >&2
    apt-cache "${apt_opts[@]}" madison bitcoin-knots >&2 || true
    echo "fetch-bitcoind: update PIN in scripts/fetch-bitcoind.sh to one of those versions" >&2
    exit 1
fi
rm -f "$APT/debs"/*.deb
(cd "$APT/debs" && apt-get -qq "${apt_opts[@]}" download "bitcoin-knots=$PIN" "${LIBS[@]}")

staging=$TOOLS/bitcoin.new
rm -rf "$staging"
mkdir -p "$staging"
for deb in "$APT/debs"/*.deb; do
    dpkg -x "$deb" "$staging"
done
libdir=$(dirname "$(find "$staging/usr/lib" -maxdepth 2 -name 'ld-linux*.so.*' | head -1)")
loader=$(find "$libdir" -maxdepth 1 -name 'ld-linux*.so.*' | head -1)
if [ ! -x "$loader" ]; then
    echo "fetch-bitcoind: no dynamic loader in sid's libc6 under $staging" >&2
    exit 1
fi
missing=$("$loader" --library-path "$libdir" --list "$staging/usr/bin/bitcoind" | grep 'not found' || true)
if [ -n "$missing" ]; then
    echo "fetch-bitcoind: bitcoind needs libraries that are not fetched (add their packages to LIBS):" >&2
    echo "$missing" >&2
    exit 1
fi
rm -rf "$TOOLS/bitcoin"
mv "$staging" "$TOOLS/bitcoin"

rel_lib=${libdir#"$staging"/}
for tool in bitcoind bitcoin-cli; do
    rm -f "$BIN/$tool"
    cat >"$BIN/$tool" <<WRAPPER
#!/bin/sh
# Runs Debian sid's $tool (fetched by scripts/fetch-bitcoind.sh) with sid's own loader and libraries.
root=\$(cd "\$(dirname "\$0")/../bitcoin" && pwd)
lib=\$root/$rel_lib
exec "\$lib/$(basename "$loader")" --argv0 "\$0" --library-path "\$lib" "\$root/usr/bin/$tool" "\$@"
WRAPPER
    chmod +x "$BIN/$tool"
done

major=$(major_of "$BIN/bitcoind")
if [ "$major" -lt "$MIN_MAJOR" ]; then
    echo "fetch-bitcoind: $BIN/bitcoind does not run or reports version $major" >&2
    exit 1
fi
echo "fetch-bitcoind: $("$BIN/bitcoind" -version | head -1)"
