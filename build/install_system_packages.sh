#!/usr/bin/env bash
# Debian packages the project needs beside its Python ones: ffmpeg/ffprobe, used
# by the tests to check HDR10 tags and side data of the files the CLI writes, and
# the openssl CLI, which makes the certificates of the TLS tests.
set -euo pipefail
missing=()
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
  echo "error: please install ${missing[*]} (apt-get install ${missing[*]}); this script needs root for it" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
