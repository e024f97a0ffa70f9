#!/usr/bin/env bash
# Make sure the host tools the recipe and its tests need are present.
# Installs them with apt-get when missing and running as root; otherwise prints the exact command.
set -euo pipefail
# sctk: NIST's sclite, the recipe's scorer (Debian runs it as `sctk sclite`; an sclite already on
# PATH, e.g. ESPnet's own tools/ build, does as well)
tools=(espeak-ng sox flac sctk)
missing=()
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || { [ "$t" = sctk ] && command -v sclite >/dev/null 2>&1; } || missing+=("$t")
done
# Text of the demo corpus (espnet_ssm/recipe/text_corpus.py): WordNet's example sentences
# (wordnet-base, WordNet 3.0 licence) and fortune cookies (fortunes, BSD licence).
# (SYSTEM_DEPS_ROOT: where to look for them instead of /, for the tests.)
data_packages=(wordnet-base fortunes)
data_files=(/usr/share/wordnet/data.noun /usr/share/games/fortunes/wisdom)
for i in "${!data_packages[@]}"; do
  [ -f "${SYSTEM_DEPS_ROOT:-}${data_files[$i]}" ] || missing+=("${data_packages[$i]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing missing system tools: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "Missing system tools: ${missing[*]}." >&2
echo "Install them with:  sudo sh -c '$cmd'" >&2
echo "(on macOS: brew install ${missing[*]})" >&2
exit 1
