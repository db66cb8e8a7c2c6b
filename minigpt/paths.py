"""Where the package finds its presets: the Hydra config folder beside it, `conf/`, named in one place.

(`python -m minigpt.train` names it as Hydra wants, `config_path="../conf"` relative to minigpt/train.py, and
minigpt/plan/compose.py builds the same search path from that file.)
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
