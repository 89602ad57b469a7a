#!/usr/bin/env bash
# Pack what scripts/remote/train.py needs into .remote/ (git-ignored via .git/info/exclude), for a machine with a
# GPU and its own PyTorch that may have no network: wheels of the pinned stack for that machine's Python, the
# CLINC150 files, and the base encoder packed as fp16 with only the embedding rows of tokens that occur in the
# data (any split, oos included: a row left out is zero there, which changes what the model sees).
# Then carry .remote/ with the repository to the machine, run train.py there, and bring --out back
# (scripts/remote/fetch.py rebuilds the packages). Settings, all optional:
#   PY_VERSION=3.12            the remote interpreter's Python version (wheels are fetched for it)
#   PLATFORMS="manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64"
#                              wheel platform tags the remote machine accepts
#   DATA=DIR                   folder holding data_oos_plus.json and domains.json (default: where the
#                              pipeline finds CLINC150, ../shared/data/clinc150 or data/clinc150)
#   TEACHER=artifacts/teacher  also pack that teacher the same way (for train.py --stages seeds)
#   BASE_PACK=0                leave the base out (the seeds stage needs only the teacher)
#   MAX_MB=N                   fail if .remote/ ends up larger than N MB (for transfers with a size limit;
#                              wheels + base + teacher are ~75 MB, BASE_PACK=0 saves ~30)
set -euo pipefail
cd "$(dirname "$0")/../.."
# The folders compression.data looks in: a shared data folder beside the checkout, else data/clinc150.
if [ -z "${DATA:-}" ]; then
  DATA=data/clinc150
  [ -f ../shared/data/clinc150/data_oos_plus.json ] && DATA=../shared/data/clinc150
fi
PY=${PY:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
PLATFORMS=${PLATFORMS:-manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64}
TEACHER=${TEACHER:-}
BASE_PACK=${BASE_PACK:-1}
MAX_MB=${MAX_MB:-}
platform_args=()
for tag in $PLATFORMS; do platform_args+=(--platform "$tag"); done
rm -rf .remote/base .remote/teacher .remote/whl
mkdir -p .git/info .remote/whl .remote/base .remote/data/clinc150
grep -qx "/.remote/" .git/info/exclude 2>/dev/null || echo "/.remote/" >> .git/info/exclude
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  "${platform_args[@]}" -d .remote/whl \
  transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.0 optuna==5.0.0 colorlog \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
cp "$DATA/data_oos_plus.json" "$DATA/domains.json" .remote/data/clinc150/
BASE=$($PY -c "from compression.config import default_base_model; print(default_base_model())")
for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do cp "$BASE/$f" .remote/base/; done
$PY - "$BASE" <<'PY'
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
data = json.load(open(".remote/data/clinc150/data_oos_plus.json"))
ids = set(tok.all_special_ids)
for rows in data.values():  # every split, the oos_* ones included
    for text, _ in rows:
        ids.update(tok(text, truncation=True, max_length=64)["input_ids"])
json.dump(sorted(ids), open(".remote/token_ids.json", "w"))
print(f"{len(ids)} token ids")
PY
if [ "$BASE_PACK" = 1 ]; then
  $PY scripts/remote/weights.py pack "$BASE" .remote/base/model.pack.safetensors --token-ids .remote/token_ids.json
else
  rm -rf .remote/base
fi
if [ -n "$TEACHER" ]; then
  [ -f "$TEACHER/manifest.json" ] || { echo "TEACHER=$TEACHER: no model package there" >&2; exit 2; }
  mkdir -p .remote/teacher
  for f in config.json manifest.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    [ -f "$TEACHER/$f" ] && cp "$TEACHER/$f" .remote/teacher/
  done
  $PY scripts/remote/weights.py pack "$TEACHER" .remote/teacher/model.pack.safetensors --token-ids .remote/token_ids.json
fi
du -sh .remote
if [ -n "$MAX_MB" ]; then
  size_mb=$(( $(du -sk .remote | cut -f1) / 1024 ))
  if [ "$size_mb" -gt "$MAX_MB" ]; then
    echo ".remote is ${size_mb} MB, over MAX_MB=${MAX_MB}: pack less (BASE_PACK=0, no TEACHER) or raise the budget" >&2
    exit 3
  fi
fi
