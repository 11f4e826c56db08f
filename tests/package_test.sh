#!/usr/bin/env bash
# `make package` builds a Debian package whose contents are what an operator
# expects: this builds it (CPack DEB from the build folder), installs its
# files into a staged root (dpkg-deb -x: no root, no system changes) and
# checks the files, the conffiles, the maintainer scripts, the man pages,
# the systemd units (generated for /usr) with systemd-analyze verify, and
# the package with lintian.
set -euo pipefail
BUILD="$(cd "$1" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$BUILD" && cpack -G DEB -B "$tmp/out" >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log"; echo "FAIL: cpack"; exit 1; }
deb="$(ls "$tmp"/out/liaison_*.deb)"
[ -f "$deb" ] || { echo "FAIL: no .deb"; exit 1; }
echo "built $(basename "$deb")"
dpkg-deb -c "$deb" > "$tmp/contents"
root="$tmp/root"
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$tmp/control"

status=0
for f in usr/bin/liaison-broker usr/bin/liaison usr/bin/liaison-gateway \
         usr/lib/systemd/system/liaison-broker.service usr/lib/systemd/system/liaison-gateway@.service \
         etc/liaison/broker.yaml etc/liaison/policies/vocabulary.yaml \
         usr/share/doc/liaison/examples/policies/agencies/exit-mombasa.yaml \
         usr/share/doc/liaison/examples/broker.yaml usr/share/doc/liaison/operations.md \
         usr/share/doc/liaison/prometheus/alerts.yaml \
         usr/share/man/man1/liaison-broker.1.gz usr/share/man/man1/liaison.1.gz usr/share/man/man1/liaison-gateway.1.gz \
         usr/share/bash-completion/completions/liaison \
         usr/share/doc/liaison/copyright usr/share/doc/liaison/changelog.gz; do
  if [ -e "$root/$f" ]; then echo "ok: /$f"; else echo "MISSING: /$f"; status=1; fi
done
# No agency is live after installing: the examples are documentation.
if ls "$root/etc/liaison/policies/agencies/"*.yaml >/dev/null 2>&1; then
  echo "FAIL: example agencies installed live in /etc/liaison/policies/agencies"; status=1
fi
if grep -q "usr/local" "$root"/usr/lib/systemd/system/*.service; then
  echo "FAIL: a unit names /usr/local"; status=1
fi
grep -q "^ExecStart=/usr/bin/liaison-broker " "$root/usr/lib/systemd/system/liaison-broker.service" ||
  { echo "FAIL: the broker unit does not start /usr/bin/liaison-broker"; status=1; }
for c in /etc/liaison/broker.yaml /etc/liaison/policies/vocabulary.yaml; do
  grep -qx "$c" "$tmp/control/conffiles" || { echo "FAIL: $c is not a conffile"; status=1; }
done
grep -q "adduser --system" "$tmp/control/postinst" || { echo "FAIL: postinst makes no liaison user"; status=1; }
grep -q "^Depends:.*libzmq5" "$tmp/control/control" || { echo "FAIL: Depends lacks libzmq5"; cat "$tmp/control/control"; status=1; }
zcat "$root/usr/share/man/man1/liaison-broker.1.gz" | grep -qE -- 'check(\\)?-config' ||
  { echo "FAIL: the broker's man page lacks --check-config"; status=1; }
# The packaged binaries run from the staged root.
"$root/usr/bin/liaison-broker" --version | grep -q "^liaison-broker " || { echo "FAIL: --version"; status=1; }
"$root/usr/bin/liaison" policy check "$root/usr/share/doc/liaison/examples/policies" >/dev/null 2>&1 ||
  { echo "FAIL: the example policies do not check"; status=1; }
# The units, as systemd reads them: the staged root plus the host's own
# systemd units (sysinit.target, ...) and /bin/kill (ExecReload), so that
# `systemd-analyze verify` has nothing to complain about but our units.
command -v systemd-analyze >/dev/null || { echo "FAIL: no systemd-analyze (scripts/install-deps installs systemd)"; exit 1; }
vroot="$tmp/verify-root"
cp -a "$root" "$vroot"
cp -an /usr/lib/systemd/system/. "$vroot/usr/lib/systemd/system/"
mkdir -p "$vroot/bin" && cp /bin/kill "$vroot/bin/kill"  # procps
for unit in liaison-broker.service liaison-gateway@.service; do
  if out="$(systemd-analyze verify --root="$vroot" "$vroot/usr/lib/systemd/system/$unit" 2>&1)" && [ -z "$out" ]; then
    echo "ok: $unit verifies"
  else
    echo "FAIL: systemd-analyze verify $unit:"; echo "$out"; status=1
  fi
done
# ...and the check would see a unit that starts what the package does not hold.
sed 's|^ExecStart=/usr/bin/liaison-broker |ExecStart=/usr/bin/liaison-broker-missing |' \
  "$vroot/usr/lib/systemd/system/liaison-broker.service" > "$vroot/usr/lib/systemd/system/liaison-broken.service"
if systemd-analyze verify --root="$vroot" "$vroot/usr/lib/systemd/system/liaison-broken.service" >/dev/null 2>&1; then
  echo "FAIL: systemd-analyze verify passes a unit whose ExecStart is missing"; status=1
fi

# Debian's own checks of the package (lintian): no error and no warning.
# Where a tag is ever justified, deploy/debian/lintian-overrides says why.
command -v lintian >/dev/null || { echo "FAIL: no lintian (scripts/install-deps installs it)"; exit 1; }
if lintian --no-cfg --fail-on error,warning "$deb" > "$tmp/lintian" 2>&1; then
  echo "ok: lintian finds no error or warning"
else
  echo "FAIL: lintian:"; grep -v "running with root privileges" "$tmp/lintian"; status=1
fi
[ "$status" -eq 0 ] && echo "ok: the package holds what an operator expects"
exit $status
