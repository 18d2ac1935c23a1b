#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 (python3.13t, configured with --disable-gil) for the
# pure-Python baselines in pyworkers/examples/pure_python_baselines.py.
#
# Runs only when someone runs it: nothing in the build, the tests or the examples calls
# it. It takes the source from Debian 13 (trixie)'s python3.13 source package, fetched
# with apt-get through an apt state of its own under the work directory (its own
# sources.list with one trixie deb-src line, its own lists and cache). /etc/apt and
# /var/lib/apt/lists are never written, so Debian 12's apt cannot be broken by a trixie
# line and there is nothing to remove afterwards. Only installing the build
# dependencies (from Debian 12's own archive) needs root; without root the script
# prints the exact commands and stops.
#
# By default the build uses the pristine upstream tarball of that source package
# (python3.13_<ver>.orig.tar.xz, checked by apt against the signed trixie index) plus
# Debian's fix patches from the same package (CVE-*, and the named crash/leak fixes),
# which apply cleanly on it. --debian-patches builds the tree with all of Debian's
# patches instead: they disable ensurepip and change the install schemes for a /usr
# build, which is not what a private prefix wants.
#
# Usage: scripts/build-free-threaded-python.sh [options]
#   --prefix DIR        install prefix (default: $HOME/.local/slither-python3.13t)
#   --workdir DIR       download and build directory
#                       (default: $HOME/.cache/slither-python-build)
#   --jobs N            make -j N (default: nproc)
#   --optimize          --enable-optimizations --with-lto (PGO: several times slower to build)
#   --debian-patches    build the Debian-patched tree instead of the pristine tarball
#   --no-fix-patches    build the pristine tarball without Debian's fix patches
#   --skip-deps         do not check or install the Debian 12 build dependencies
#   --fetch-only        stop once the source is downloaded and unpacked
#   --dry-run           print every command, run none
#   -h, --help
# Environment: PREFIX, WORKDIR and JOBS give the same defaults as the options.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-$HOME/.local/slither-python3.13t}
WORKDIR=${WORKDIR:-$HOME/.cache/slither-python-build}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
SUITE=trixie
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SRCPKG=python3.13
OPTIMIZE=0
DEBIAN_PATCHES=0
FIX_PATCHES=1
# Debian patches applied on the pristine tree: security and crash fixes only
FIX_RE='^(CVE-[0-9-]+|dict-use-after-free|ssl-[a-z-]+|traverse-managed-dicts'
FIX_RE+='|gchead-alignment|issue[0-9]+)[.](patch|diff)$'
SKIP_DEPS=0
FETCH_ONLY=0
DRY_RUN=0

# Debian 12 names. REQUIRED: without them there is no usable interpreter (no pip: ssl,
# zlib). OPTIONAL: stdlib modules (bz2, lzma, sqlite3, readline, curses, dbm.gnu, the uuid
# C helper) that are built when their headers are there; dpkg-dev unpacks a Debian-patched
# tree. tk is left out (large, unused here).
REQUIRED="build-essential patch pkg-config xz-utils ca-certificates libssl-dev zlib1g-dev
libffi-dev"
OPTIONAL="dpkg-dev libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev libncurses-dev
libgdbm-dev libgdbm-compat-dev uuid-dev"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --workdir=*) WORKDIR=${1#*=}; shift ;;
    --jobs) JOBS=$2; shift 2 ;;
    --jobs=*) JOBS=${1#*=}; shift ;;
    --optimize) OPTIMIZE=1; shift ;;
    --debian-patches) DEBIAN_PATCHES=1; shift ;;
    --no-fix-patches) FIX_PATCHES=0; shift ;;
    --skip-deps) SKIP_DEPS=1; shift ;;
    --fetch-only) FETCH_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-free-threaded-python: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
case "$WORKDIR" in /*) ;; *) WORKDIR=$(pwd)/$WORKDIR ;; esac

say() { printf '==> %s\n' "$*"; }
die() { printf 'build-free-threaded-python: %s\n' "$*" >&2; exit 1; }

# run CMD...: echo it, then run it (or only echo it under --dry-run)
run() {
  printf '  $ %s\n' "$*"
  [ "$DRY_RUN" = 1 ] || "$@"
}

# run_logged LOG CMD...: as run, with the output in LOG; on failure show its tail
run_logged() {
  local log=$1; shift
  printf '  $ %s   (output: %s)\n' "$*" "$log"
  [ "$DRY_RUN" = 1 ] && return 0
  if ! "$@" >"$log" 2>&1; then
    echo "---- last 40 lines of $log ----" >&2
    tail -n 40 "$log" >&2
    die "failed: $*"
  fi
}

APT_DIR=$WORKDIR/apt
APT_OPTS=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list"
          -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
          -o "Dir::State::Lists=$APT_DIR/lists"
          -o "Dir::Cache=$APT_DIR/cache")
SRC_DIR=$WORKDIR/src
LOG_DIR=$WORKDIR/logs

say "free-threaded CPython build (python3.13t) from Debian $SUITE's $SRCPKG source package"
echo "    prefix:  $PREFIX"
echo "    workdir: $WORKDIR"
echo "    jobs:    $JOBS$([ "$OPTIMIZE" = 1 ] && echo ', PGO+LTO')"
if [ "$DEBIAN_PATCHES" = 1 ]; then TREE_KIND="Debian-patched tree"
elif [ "$FIX_PATCHES" = 1 ]; then TREE_KIND="pristine upstream tarball + Debian's fix patches"
else TREE_KIND="pristine upstream tarball"; fi
echo "    tree:    $TREE_KIND"
[ "$DRY_RUN" = 1 ] && echo "    dry run: commands are printed, none is run"

if [ -r /etc/os-release ]; then
  . /etc/os-release
  if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
    echo "    note: this is ${PRETTY_NAME:-an unknown system}, not Debian 12; the package names" \
         "below are Debian 12's"
  fi
fi
command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian system"

# 1. Build dependencies, from the system's own (Debian 12) archive.
if [ "$SKIP_DEPS" = 0 ]; then
  say "1/5 build dependencies (Debian 12 packages)"
  missing_of() {
    local p out=""
    for p in "$@"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || out="$out $p"
    done
    echo "$out"
  }
  miss_req=$(missing_of $REQUIRED)
  miss_opt=$(missing_of $OPTIONAL)
  missing="$miss_req$miss_opt"
  if [ -z "$missing" ]; then
    echo "    all installed"
  elif [ "$(id -u)" = 0 ]; then
    [ "$DRY_RUN" = 1 ] || mkdir -p "$WORKDIR/logs"
    run_logged "$WORKDIR/logs/system-apt-update.log" apt-get update
    run_logged "$WORKDIR/logs/deps-install.log" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends $missing
  elif [ "$DRY_RUN" = 1 ]; then
    echo "  (as root) apt-get update && apt-get install -y --no-install-recommends$missing"
  elif [ -n "$miss_req" ]; then
    echo "    missing:$missing" >&2
    echo "    installing them needs root. Run these, then run this script again:" >&2
    echo "      sudo apt-get update" >&2
    echo "      sudo apt-get install -y --no-install-recommends$missing" >&2
    echo "    (or pass --skip-deps to try without them)" >&2
    exit 1
  else
    echo "    optional packages missing:$miss_opt (their stdlib modules will not be built)"
    echo "    to have them, as root:"
    echo "      apt-get update && apt-get install -y --no-install-recommends$miss_opt"
  fi
else
  say "1/5 build dependencies: skipped (--skip-deps)"
fi

# 2. The trixie source index, in an apt state private to this work directory.
say "2/5 Debian $SUITE source index (private apt state in $APT_DIR; /etc/apt is not touched)"
run mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/sources.list.d" \
  "$SRC_DIR" "$LOG_DIR"
SRC_LINE="deb-src [signed-by=$KEYRING] $MIRROR $SUITE main"
printf "  \$ echo '%s' > %s\n" "$SRC_LINE" "$APT_DIR/sources.list"
[ "$DRY_RUN" = 1 ] || echo "$SRC_LINE" >"$APT_DIR/sources.list"
[ -r "$KEYRING" ] || [ "$DRY_RUN" = 1 ] || die "$KEYRING missing (package debian-archive-keyring)"
run_logged "$LOG_DIR/apt-update.log" apt-get "${APT_OPTS[@]}" update
if [ "$DRY_RUN" = 0 ]; then
  VERSION=$(apt-cache "${APT_OPTS[@]}" showsrc "$SRCPKG" | sed -n 's/^Version: //p' \
            | sort -V | tail -n 1)
  [ -n "$VERSION" ] ||
    die "no $SRCPKG source package in $SUITE's index (see $LOG_DIR/apt-update.log)"
  echo "    $SRCPKG source version in $SUITE: $VERSION"
fi

# 3. Download (apt checks the files against the signed index) and unpack.
say "3/5 apt-get source $SRCPKG"
run cd "$SRC_DIR" 2>/dev/null || [ "$DRY_RUN" = 1 ]
if [ "$DEBIAN_PATCHES" = 1 ]; then
  command -v dpkg-source >/dev/null || [ "$DRY_RUN" = 1 ] ||
    die "dpkg-source missing (package dpkg-dev)"
  for d in "$SRC_DIR"/"$SRCPKG"-*/; do [ -d "$d" ] && run rm -rf "$d"; done
  run_logged "$LOG_DIR/apt-source.log" apt-get "${APT_OPTS[@]}" source "$SRCPKG"
  TREE=$(ls -d "$SRC_DIR"/"$SRCPKG"-*/ 2>/dev/null | sort -V | tail -n 1 || true)
  [ "$DRY_RUN" = 1 ] && TREE=${TREE:-$SRC_DIR/$SRCPKG-<version>}
else
  run_logged "$LOG_DIR/apt-source.log" apt-get "${APT_OPTS[@]}" source --download-only "$SRCPKG"
  ORIG=$(ls "$SRC_DIR"/"$SRCPKG"_*.orig.tar.* 2>/dev/null | grep -v '\.asc$' | sort -V |
         tail -n 1 || true)
  if [ "$DRY_RUN" = 0 ]; then
    [ -n "$ORIG" ] || die "no upstream tarball downloaded into $SRC_DIR"
    TOP=$( (tar tf "$ORIG" || true) | head -n 1 | cut -d/ -f1)
    run rm -rf "${SRC_DIR:?}/$TOP"
    run tar xf "$ORIG" -C "$SRC_DIR"
    TREE=$SRC_DIR/$TOP
    DEBTAR=$(ls "$SRC_DIR"/"$SRCPKG"_*.debian.tar.* 2>/dev/null | sort -V | tail -n 1 || true)
    if [ "$FIX_PATCHES" = 1 ] && [ -n "$DEBTAR" ]; then
      run rm -rf "$SRC_DIR/debian-files"
      run mkdir -p "$SRC_DIR/debian-files"
      run tar xf "$DEBTAR" -C "$SRC_DIR/debian-files"
      PDIR=$SRC_DIR/debian-files/debian/patches
      applied=0
      for p in $(grep -v '^#' "$PDIR/series" | awk '{print $1}' | grep -E "$FIX_RE" || true); do
        if patch -d "$TREE" -p1 -s -f --dry-run <"$PDIR/$p" >/dev/null 2>&1; then
          patch -d "$TREE" -p1 -s -f <"$PDIR/$p" >/dev/null
          applied=$((applied + 1))
        else
          echo "    not applied (does not apply cleanly): $p"
        fi
      done
      echo "    applied $applied Debian fix patches ($PDIR)"
    fi
  else
    echo "  $ tar xf $SRC_DIR/${SRCPKG}_<version>.orig.tar.xz -C $SRC_DIR"
    TREE=$SRC_DIR/Python-3.13.x
  fi
fi
[ "$DRY_RUN" = 1 ] || [ -f "${TREE:-/nonexistent}/configure" ] ||
  die "no unpacked source tree in $SRC_DIR"
TREE=${TREE%/}
echo "    source tree: $TREE"
if [ "$FETCH_ONLY" = 1 ]; then
  say "stopping after the download (--fetch-only)"
  exit 0
fi

# 4. Configure and build.
say "4/5 configure --disable-gil, make -j$JOBS"
CONF=(--disable-gil "--prefix=$PREFIX")
# Debian's tree disables ensurepip (pip comes from a separate package there)
if [ "$DEBIAN_PATCHES" = 1 ]; then
  CONF+=(--without-ensurepip)
else
  CONF+=(--with-ensurepip=install)
fi
[ "$OPTIMIZE" = 1 ] && CONF+=(--enable-optimizations --with-lto)
run cd "$TREE" 2>/dev/null || [ "$DRY_RUN" = 1 ]
[ -f Makefile ] && run_logged "$LOG_DIR/distclean.log" make distclean
run_logged "$LOG_DIR/configure.log" ./configure "${CONF[@]}"
START=$(date +%s)
run_logged "$LOG_DIR/make.log" make -j"$JOBS"
[ "$DRY_RUN" = 1 ] || echo "    built in $(( $(date +%s) - START ))s"

# 5. Install and check.
say "5/5 make install into $PREFIX"
run_logged "$LOG_DIR/install.log" make install
PY=$PREFIX/bin/python3.13t
if [ "$DRY_RUN" = 1 ]; then
  echo "  $ $PY -c 'import sysconfig, sys; ...'"
  exit 0
fi
[ -x "$PY" ] || die "$PY was not installed (see $LOG_DIR/install.log)"
"$PY" - <<'EOF' || die "the installed interpreter does not run"
import sys, sysconfig
ft = sysconfig.get_config_var("Py_GIL_DISABLED")
print("    interpreter:", sys.executable, sys.version.split()[0])
print("    free-threaded build (Py_GIL_DISABLED):", ft)
print("    GIL enabled now (sys._is_gil_enabled()):", sys._is_gil_enabled())
if not ft:
    sys.exit("not a free-threaded build")
EOF

cat <<EOF

Done. Free-threaded interpreter: $PY

Use it for the pure-Python baselines:
  export SLITHER_BASELINE_PYTHON=$PY
  "\$SLITHER_BASELINE_PYTHON" $ROOT/pyworkers/examples/pure_python_baselines.py --all --mode both
The GIL stays off unless an extension module that does not support free threading is
imported (Python then re-enables it and warns); PYTHON_GIL=0 in the environment keeps it
off regardless. The baseline script prints which state it ran in.
The source and logs stay in $WORKDIR (remove it to reclaim the space).
EOF
