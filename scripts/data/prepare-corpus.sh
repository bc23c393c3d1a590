#!/usr/bin/env bash
# Prepares the 6M-token public-domain English corpus (data/prepared/README.md lists its sources and licenses) as a
# Megatron indexed dataset, data/prepared/pd_english_text_document.bin/.idx, on a CPU machine that reaches Debian's
# packages: apt-get download fetches them into a temporary folder (nothing is installed), corpus-jsonl.py turns them
# into JSON lines, and `harness preprocess` tokenizes them. A GPU run never downloads it: it carries data/prepared/.
#
# usage: scripts/data/prepare-corpus.sh [--force]   (without --force an existing dataset is kept and its size printed)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix="$repo/data/prepared/pd_english_text_document" # preprocess names it OUTPUT-PREFIX_text_document
# Versions recorded in data/prepared/README.md; apt-get takes the ones its lists hold, and the script prints them.
packages=(wordnet-base bible-kjv bible-kjv-text sword-text-web sword-comm-mhcc dict-devil jargon-text)

die() { echo "prepare-corpus: $*" >&2; exit 1; }

if [[ "${1:-}" != "--force" && -s "$prefix.bin" && -s "$prefix.idx" ]]; then
    echo "prepare-corpus: $prefix.bin/.idx already exist ($(stat -c %s "$prefix.bin") bytes of uint16 tokens); --force remakes them."
    exit 0
fi
for tool in apt-get dpkg-deb python3 dotnet; do
    command -v "$tool" >/dev/null || die "$tool is missing; this script runs on a Debian-family CPU machine with python3 and the .NET SDK."
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/root"
# _apt cannot write into a root-owned mktemp folder; let it, so apt-get does not fall back to an unsandboxed download.
chmod 777 "$work/debs"
(cd "$work/debs" && apt-get download "${packages[@]}" >/dev/null 2>"$work/apt.err") \
    || die "apt-get download ${packages[*]} failed ($(tail -1 "$work/apt.err")); run 'apt-get update' first."
for package in "${packages[@]}"; do
    deb=("$work/debs/${package}"_*.deb)
    [[ -f "${deb[0]}" ]] || die "apt-get did not fetch $package."
    echo "prepare-corpus: $package $(dpkg-deb -f "${deb[0]}" Version)"
    dpkg-deb -x "${deb[0]}" "$work/root/$package"
done

# The KJV text ships compressed in bible-kjv's own format; its `bible` program prints it, one verse a line (-f).
"$work/root/bible-kjv/usr/bin/bible" -f -p "$work/root/bible-kjv-text/usr/lib" "gen1:1-rev22:21" </dev/null \
    >"$work/root/kjv.txt" || die "bible-kjv's bible program could not print the KJV text."
python3 "$repo/scripts/data/corpus-jsonl.py" "$work/root" "$work/jsonl"

harness="$repo/src/Cli/bin/Release/net10.0/harness"
if [[ ! -x "$harness" ]]; then
    dotnet build "$repo/src/Cli" -c Release >/dev/null || die "dotnet build src/Cli -c Release failed; build the harness first."
fi
[[ -x "$harness" ]] || die "$harness is missing after the build."
mkdir -p "$(dirname "$prefix")"
inputs=()
for f in "$work/jsonl"/*.jsonl; do inputs+=(--input "$f"); done
"$harness" preprocess "${inputs[@]}" --output-prefix "${prefix%_text_document}" --json-keys text --append-eod --workers 2
echo "prepare-corpus: --data-path data/prepared/pd_english_text_document ($(stat -c %s "$prefix.bin") bytes in .bin)"
