#!/usr/bin/env bash
# gen_offsets.sh: prints sampler/pyoffsets_generated.c on stdout (run by `make offsets`).
#
# Compiles tools/gen_offsets/probe.c against the internal headers of every installed CPython
# 3.7-3.12 (pyenv, plus Debian's /usr/include/python3.11 when python3.11-dev is installed), runs
# each probe and turns its output into one table entry per distinct layout, keyed by the version
# range it holds for:
#   - a range starts at the first patch release with that layout: .0 unless KNOWN_LAYOUT_CHANGES
#     says the minor changed layout at a patch release (3.7.4), and ends at the end of the minor
#     (micro 255) or just before the next known change;
#   - two installs of one minor with identical offsets are merged into one entry; if they differ
#     the range is split at the later install's micro (or at a known change between the two).
# 3.13.0's headers, when installed, give an entry printed inside `#if 0`: 3.13 is read at run
# time from _Py_DebugOffsets, the entry is only a reference for sampler/pyoffsets.c and its tests.
# The table is wrapped in clang-format off/on so `make format` leaves the output as generated.
# Diagnostics go to stderr; a probe that fails to build or run fails the whole script.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
probe_src=$here/probe.c
cc=${CC:-gcc}
pyenv_root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
debian_include=/usr/include/python3.11

# minor:micro where that minor's layout changed at a patch release (py-spy's tables record
# _PyRuntimeState.gilstate.tstate_current at 1392 for 3.7.0-3.7.3 and 1480 from 3.7.4 on).
KNOWN_LAYOUT_CHANGES="3.7:4"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

die() {
    echo "gen_offsets: $*" >&2
    exit 1
}

# probe <name> <include dir> -> $work/<name>.out (the probe's initializer lines)
probe() {
    local name=$1 inc=$2 extra=()
    # 3.7 keeps old-style internal headers (internal/pystate.h) that would shadow the public
    # ones if internal/ were on the include path; 3.8+ name them pycore_*.h.
    [[ -f $inc/internal/pystate.h ]] || extra=(-I"$inc/internal")
    "$cc" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$inc" "${extra[@]}" \
        -o "$work/$name" "$probe_src" || die "probe does not build against $inc"
    "$work/$name" >"$work/$name.out" || die "probe built against $inc failed"
}

# micro_of <probe output> -> the micro version of the headers the probe saw
micro_of() {
    local hex
    hex=$(sed -n 's/^ *\.version_hex = 0x\([0-9a-f]*\),$/\1/p' "$1")
    [[ -n $hex ]] || die "no version_hex in $1"
    echo $((16#${hex:4:2}))
}

# The offsets without the informational version_hex line, for comparing two installs.
layout_of() { grep -v '\.version_hex = ' "$1"; }

# known_change_at_or_below <minor> <micro> -> the largest known change point <= micro, else 0
known_change_at_or_below() {
    local best=0 entry at
    for entry in $KNOWN_LAYOUT_CHANGES; do
        at=${entry##*:}
        if [[ ${entry%%:*} == "$1" ]] && ((at <= $2 && at > best)); then best=$at; fi
    done
    echo "$best"
}

# known_change_above <minor> <micro> -> the smallest known change point > micro, else 256
known_change_above() {
    local best=256 entry at
    for entry in $KNOWN_LAYOUT_CHANGES; do
        at=${entry##*:}
        if [[ ${entry%%:*} == "$1" ]] && ((at > $2 && at < best)); then best=$at; fi
    done
    echo "$best"
}

# Installs as "minor micro probe-name label|include-dir" lines.
installs=()
add_install() { # <include dir> <origin>
    local inc=$1 origin=$2 name minor micro
    name=p${#installs[@]}
    probe "$name" "$inc"
    micro=$(micro_of "$work/$name.out")
    minor=$(basename "$inc" | sed -n 's/^python\(3\.[0-9]*\)m\{0,1\}$/\1/p')
    [[ -n $minor ]] || die "cannot tell the minor version of $inc"
    installs+=("$minor $micro $name $origin $minor.$micro|$inc")
    echo "gen_offsets: $origin $minor.$micro from $inc" >&2
}

reference_313=""
for dir in "$pyenv_root"/versions/3.*; do
    [[ -d $dir ]] || continue
    ver=$(basename "$dir")
    for inc in "$dir"/include/python3.*; do
        [[ -d $inc/internal ]] || continue
        case $ver in
        3.7.* | 3.8.* | 3.9.* | 3.10.* | 3.11.* | 3.12.*) add_install "$inc" pyenv ;;
        3.13.0)
            probe ref313 "$inc"
            reference_313="pyenv 3.13.$(micro_of "$work/ref313.out")|$inc"
            echo "gen_offsets: pyenv $ver from $inc (reference only)" >&2
            ;;
        esac
    done
done
if [[ -d $debian_include/internal ]]; then
    add_install "$debian_include" "Debian python3.11-dev"
fi
((${#installs[@]} > 0)) || die "no CPython 3.7-3.12 headers found under $pyenv_root/versions"

sorted_installs() { printf '%s\n' "${installs[@]}" | sort -t' ' -k1,1V -k2,2n; }

# emit_entry <minor> <first micro> <last micro> <probe name> <sources>
emit_entry() {
    local major=${1%%.*} minor=${1##*.}
    cat <<EOF
    {
        .min_hex = PY_HEX($major, $minor, $2),
        .max_hex = PY_HEX($major, $minor, $3),
        .source = "$5 headers",
        .off = {
EOF
    sed 's/^    /            /' "$work/$4.out"
    cat <<EOF
        },
    },
EOF
}

# State of the entry being built by emit_table (one group of installs with identical offsets).
cur_minor="" cur_start=0 cur_micro=0 cur_name="" cur_src=""

# close_group <next start>: prints the open group, ending before <next start> or a known change.
close_group() {
    [[ -n $cur_name ]] || return 0
    local end
    end=$(($(known_change_above "$cur_minor" "$cur_micro") - 1))
    ((end < $1)) || end=$(($1 - 1))
    emit_entry "$cur_minor" "$cur_start" "$end" "$cur_name" "$cur_src"
}

emit_table() {
    local minor micro name rest start
    while read -r minor micro name rest; do
        if [[ $minor == "$cur_minor" ]] &&
            cmp -s <(layout_of "$work/$cur_name.out") <(layout_of "$work/$name.out"); then
            cur_src="$cur_src, ${rest%%|*}"
            cur_micro=$micro
            continue
        fi
        start=$(known_change_at_or_below "$minor" "$micro")
        if [[ $minor == "$cur_minor" ]]; then
            ((start > cur_micro)) || start=$micro
            close_group "$start"
        else
            close_group 256
        fi
        cur_minor=$minor cur_start=$start cur_micro=$micro cur_name=$name cur_src=${rest%%|*}
    done < <(sorted_installs)
    close_group 256
}

sources_comment() {
    local rest
    while read -r _ _ _ rest; do
        echo " *   - ${rest%%|*}: ${rest#*|}"
    done < <(sorted_installs)
    if [[ -n $reference_313 ]]; then
        echo " *   - ${reference_313%%|*} (reference block below): ${reference_313#*|}"
    fi
}

cat <<EOF
/* GENERATED FILE, do not edit: the per-version CPython offsets for 3.7-3.12.
 *
 * Made by \`tools/gen_offsets/gen_offsets.sh > sampler/pyoffsets_generated.c\` (\`make offsets\`),
 * which compiles tools/gen_offsets/probe.c with -DPy_BUILD_CORE using
 * $("$cc" --version | head -n 1)
 * against the internal headers of:
$(sources_comment)
 * Each entry holds for [min_hex, max_hex], release level ignored; gen_offsets.sh says how the
 * ranges are chosen. 3.13 is read at run time from _Py_DebugOffsets (pyoffsets.c).
 */
#include "pyoffsets.h"

/* clang-format off */
const struct py_offsets_entry py_offsets_table[] = {
$(emit_table)
};

const unsigned py_offsets_table_len = sizeof py_offsets_table / sizeof py_offsets_table[0];
/* clang-format on */
EOF

if [[ -n $reference_313 ]]; then
    cat <<EOF

/* Cross-check reference only, never compiled: what the probe measures on 3.13. 3.13 offsets
 * are read at run time (py_offsets_from_debug); tests/unit/test_pyoffsets.c compares them with
 * this block. */
/* clang-format off */
#if 0
$(emit_entry 3.13 0 255 ref313 "${reference_313%%|*}")
#endif
/* clang-format on */
EOF
fi
