#!/usr/bin/env bash
# Download COCO 2017 into DIR (default data/coco) in the layout the configs expect:
#   DIR/{train2017,val2017,test2017}/*.jpg
#   DIR/annotations/{instances_train2017,instances_val2017,image_info_test-dev2017,image_info_test2017}.json
# Resumable: interrupted downloads continue (wget -c / curl -C -); finished archives are verified (md5) and
# skipped on a second run. About 19 GB (train) + 0.8 GB (val) + 6.3 GB (test) + 0.25 GB (annotations).
#   bash scripts/download_coco.sh [DIR] [--no-test] [--keep-zips]
set -euo pipefail

DIR=data/coco
WITH_TEST=1
KEEP_ZIPS=0
for arg in "$@"; do
  case "$arg" in
    --no-test) WITH_TEST=0 ;;
    --keep-zips) KEEP_ZIPS=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) DIR=$arg ;;
  esac
done

# archive  url  md5 (published checksums of the cocodataset.org files)
ARCHIVES=(
  "annotations_trainval2017.zip http://images.cocodataset.org/annotations/annotations_trainval2017.zip f4bbac642086de4f52a3fdda2de5fa2c"
  "val2017.zip http://images.cocodataset.org/zips/val2017.zip 442b8da7639aecaf257c1dceb8ba8c80"
  "train2017.zip http://images.cocodataset.org/zips/train2017.zip cced6f7f71b7629ddf16f17bbcfab6b2"
)
if [ "$WITH_TEST" = 1 ]; then
  ARCHIVES+=(
    "image_info_test2017.zip http://images.cocodataset.org/annotations/image_info_test2017.zip 85da7065e5e600ebfee8af1edb634eb5"
    "test2017.zip http://images.cocodataset.org/zips/test2017.zip 77ad2c53ac5d0aea611d422c0938fb35"
  )
fi

if command -v wget >/dev/null 2>&1; then
  fetch() { wget --continue --tries=20 --retry-connrefused --waitretry=5 -O "$1" "$2"; }
elif command -v curl >/dev/null 2>&1; then
  fetch() { curl --fail --location --retry 20 --retry-delay 5 --continue-at - --output "$1" "$2"; }
else
  echo "need wget or curl" >&2
  exit 1
fi
if command -v md5sum >/dev/null 2>&1; then
  md5_of() { md5sum "$1" | cut -d' ' -f1; }
else
  md5_of() { md5 -q "$1"; }  # macOS
fi

mkdir -p "$DIR/zips"
for entry in "${ARCHIVES[@]}"; do
  read -r name url md5 <<<"$entry"
  zip="$DIR/zips/$name"
  extracted_mark="$DIR/zips/$name.extracted"
  if [ -f "$extracted_mark" ]; then
    echo "[download_coco] $name: already downloaded, verified and extracted"
    continue
  fi
  echo "[download_coco] $name"
  fetch "$zip" "$url"            # resumes a partial file
  actual=$(md5_of "$zip")
  if [ "$actual" != "$md5" ]; then
    echo "[download_coco] md5 mismatch for $zip: got $actual, expected $md5." >&2
    echo "  If the download was interrupted, re-run to resume it; if it is corrupt, delete $zip and re-run." >&2
    exit 1
  fi
  echo "[download_coco] extracting $name"
  unzip -q -o "$zip" -d "$DIR"
  touch "$extracted_mark"
  if [ "$KEEP_ZIPS" = 0 ]; then
    rm -f "$zip"
  fi
done

for f in instances_train2017.json instances_val2017.json; do
  [ -f "$DIR/annotations/$f" ] || { echo "[download_coco] missing $DIR/annotations/$f" >&2; exit 1; }
done
echo "[download_coco] done: $DIR ($(ls "$DIR"/val2017 | wc -l) val images)"
