#!/usr/bin/env bash
# Style and layering, as CI runs them: ruff (lint + format), then the import-linter layers contract of
# pyproject.toml checked on the built wheel. The wheel, not the working tree: train/ and engines/ are
# installed as streamrec.train and streamrec.engines (pyproject's package-dir), and only the wheel has them
# where import-linter looks (under streamrec/). The same run checks that the wheel claims no other top-level name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

echo "==> ruff check, ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "==> building the wheel"
$PY -m pip wheel -q --no-deps --disable-pip-version-check -w "$work/dist" . 2> >(grep -v "is ignored: it is neither" >&2)
wheel=("$work"/dist/streamrec-*.whl)
$PY - "${wheel[0]}" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
top = sorted({n.split("/")[0] for n in names})
assert [t for t in top if not t.endswith(".dist-info")] == ["streamrec"], f"the wheel claims top-level names {top}"
for needed in ("streamrec/train/corpus/build.py", "streamrec/engines/loader.py", "streamrec/core/models/audio.py",
               "streamrec/assets/model/manifest.json", "streamrec/web/index.html"):
    assert needed in names, f"{needed} is missing from the wheel"
cached = [n for n in names if n.startswith("streamrec/assets/model/engines/")]
assert not cached, f"the wheel ships engine caches: {cached[:3]}"
print(f"    {len(names)} files, top-level: {', '.join(top)}")
PY
$PY -m zipfile -e "${wheel[0]}" "$work/site"

echo "==> import-linter on the wheel's streamrec"
# From the unpacked wheel, not the editable checkout: run outside the repository with the wheel first on the path.
(cd "$work" && PYTHONPATH="$work/site" "$OLDPWD/.venv/bin/lint-imports" --no-logo "$OLDPWD/pyproject.toml")
