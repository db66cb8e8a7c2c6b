# Environment for minigpt on TAMU HPRC (Grace, FASTER, ACES). On a login node, from the repo root:
#
#   source launch/hprc_env.sh
#
# The first time it makes a venv in $SCRATCH (your $HOME quota is small) with a CUDA build of torch
# and minigpt installed editable; later it only loads the modules and activates the venv. The module
# lines match `cluster.setup` in conf/cluster/{grace_a100,faster_a100,aces_h100}.yaml, which SLURM
# jobs run before starting; jobs use this venv's python because submitit starts them with the
# python that submitted them. If a module is missing, `module spider Python` lists the versions.
# Override before sourcing: MINIGPT_VENV, MINIGPT_CACHE, TORCH_SPEC, TORCH_INDEX.

module purge
module load WebProxy                       # pip, W&B and datasets reach the internet through the proxy
module load GCCcore/12.3.0 Python/3.11.3

MINIGPT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MINIGPT_VENV=${MINIGPT_VENV:-$SCRATCH/minigpt/venv}
export MINIGPT_CACHE=${MINIGPT_CACHE:-$SCRATCH/minigpt/cache}   # token shards, tokenizer files
export HF_HOME=${HF_HOME:-$SCRATCH/minigpt/hf}                  # datasets / transformers downloads
export WANDB_DIR=${WANDB_DIR:-$SCRATCH/minigpt}

if [ ! -x "$MINIGPT_VENV/bin/python" ]; then
  echo "creating $MINIGPT_VENV (once; a few minutes)"
  python -m venv "$MINIGPT_VENV"
  "$MINIGPT_VENV/bin/pip" install --quiet --upgrade pip
  # A100/H100: the CUDA 12.4 build; any torch in pyproject.toml's range works.
  "$MINIGPT_VENV/bin/pip" install --quiet "${TORCH_SPEC:-torch==2.6.0}" \
      --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu124}"
  "$MINIGPT_VENV/bin/pip" install --quiet -e "$MINIGPT_ROOT"
fi
source "$MINIGPT_VENV/bin/activate"
echo "minigpt: $(python -c 'import torch; print("torch", torch.__version__)') in $MINIGPT_VENV"
