#!/usr/bin/env bash
# Render the example report(s) in reports/ from the bundled fixtures. Run from the repository root:
#   bash reports/render.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fx=fixtures/moe_decode_op
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nsysparse predict --model "$fx/manifest.json" --hardware h100_sxm -o "$tmp/predictions.csv"
nsysparse report "$fx/trace.sqlite" -o reports/moe_decode_op.html --title "nsysparse example: moe_decode_op (DeepSeek-like decode, H100)" \
  --model "$fx/manifest.json" --predictions "$tmp/predictions.csv" --baseline fixtures/moe_decode_op_gap3ms/trace.sqlite
