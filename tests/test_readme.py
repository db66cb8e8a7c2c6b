"""The README and docs/*.md, command by command: every ```bash block runs, shrunk, in a copy of the repository.

One test per block (its id names the block's file, line and section), and one test that every relative
link and `#anchor` in these files resolves. Conventions, the same in README.md and docs/*.md, also
described in the README's "Contributing" section:

- ```bash blocks hold commands; output examples go in ```text (or plain ```) blocks and are not run.
  In a bash block, lines starting with `#` are notes or output and are not run either; a `\\` at the
  end of a line continues the command.
- An HTML comment right above the fence (invisible on GitHub) says how to test the block:
  `<!-- test: skip gpu|cluster|internet|ci — reason -->` skips it (the reason is printed);
  `<!-- test: minigpt.eval += eval.hellaswag.limit=8 -->` appends arguments to every command of the
  block that runs that module or program (`-m minigpt.eval`, `lm_eval`, ...), and
  `<!-- test: minigpt.train = train.num_iterations=2 -->` appends these instead of `SHRINK`;
  `<!-- test: <sweep dir> = ls -d outputs/sweeps/x/* | tail -n 1 -->` fills a `<placeholder>` with
  the output of a shell command (`fill <text> = <shell>` replaces literal text, e.g. a run directory
  whose name holds a config hash); `<!-- test: exit 1 -->` expects that exit status (default 0) and
  `<!-- test: expect 1 ok, 1 failed -->` that text in the block's output;
  `<!-- test: after Sweeps -->` runs the blocks of that section first; `<!-- test: plan -->` trains only
  the block's first `minigpt.train -m` sweep and checks each later one with `python -m minigpt.plan` on
  the same arguments (every job composed and validated as the train command would, nothing trained;
  the sweep paths have their own end-to-end tests: test_compare, test_recipe_sweep, test_sweep_resume),
  `plan all` checks every one so. Several items are separated by `;` or newlines.
- Every `minigpt.train` command gets `SHRINK` appended (a one-layer, width-32 model for 2 steps), so
  the README shows real sizes while the test stays fast. A block may append more (`minigpt.train += ...`).
- All blocks run in one copy of the repository (cwd), README.md first, then docs/*.md by name, each in
  file order: later blocks may use what earlier blocks of the same section (a `## ` heading, or the
  file's `# ` title before the first one) of the same file wrote (run directories under outputs/);
  `after <section>` names a section of any of these files. HOME is a temporary
  folder holding `~/corpus/` (a few text and .jsonl files), so `~` examples work and nothing is
  written to the real home; the token cache is the test session's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
SKIP_KINDS = ("gpu", "cluster", "internet", "ci")
# Appended to every `minigpt.train` command: the smallest model and run that still trains, validates
# (at step 0 and after each step), checkpoints and evaluates (HellaSwag on 8 committed examples).
SHRINK = {
    "minigpt.train": (
        "model.n_layer=1 model.n_embd=32 model.n_head=4 model.block_size=32 train.batch_size=2 "
        "train.total_batch_size=null train.num_iterations=2 optim.warmup_iters=1 train.val_loss_every=1 "
        "train.val_max_steps=1 train.sample_every=0 train.sample_tokens=4 train.compile=false eval.hellaswag.limit=8 "
        "eval.hellaswag.path=tests/fixtures/hellaswag/val_ctx_only_first200.jsonl"
    ),
}
COMMAND_TIMEOUT_S = 600
PLACEHOLDER = re.compile(r"<[a-z][a-z_ -]*>")


def documents() -> list[Path]:
    """The tested documents, in the order their blocks run: README.md, then docs/*.md by name."""
    return [README, *sorted(DOCS.glob("*.md"))]


@dataclass
class Block:
    section: str  # the `## ` heading it is under (or the file's `# ` title before the first one)
    line: int  # line number of its opening fence
    text: str
    directives: list[str] = field(default_factory=list)
    file: str = "README.md"  # relative to the repository root

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")[:40]
        where = re.sub(r"[^A-Za-z0-9]+", "-", self.file.removesuffix(".md")).strip("-")
        return f"{where}-L{self.line}-{slug}"

    @property
    def skip(self) -> str | None:
        for item in self.directives:
            if item.startswith("skip"):
                return item[len("skip"):].strip()
        return None

    @property
    def expected_exit(self) -> int:
        codes = [int(item.split()[1]) for item in self.directives if re.fullmatch(r"exit \d+", item)]
        return codes[0] if codes else 0

    @property
    def expected_output(self) -> list[str]:
        return [item[len("expect"):].strip() for item in self.directives if item.startswith("expect ")]

    @property
    def after(self) -> list[str]:
        return [item[len("after"):].strip() for item in self.directives if item.startswith("after ")]

    def planned(self) -> list[bool]:
        """Per command: checked by `python -m minigpt.plan` instead of run (`plan`: each `minigpt.train -m`
        command after the first; `plan all`: every one)."""
        mode = next((item.split()[1:] or ["later"] for item in self.directives if item.split()[0] == "plan"), None)
        sweeps = [is_sweep(cmd) for cmd in self.commands()]
        first = sweeps.index(True) if mode == ["later"] and True in sweeps else None
        return [mode is not None and sweep and k != first for k, sweep in enumerate(sweeps)]

    def extra_args(self) -> dict[str, list[str]]:
        """module or program -> arguments to append: SHRINK (or the block's `X = ...` instead), then `X += ...`."""
        extra = {name: [args] for name, args in SHRINK.items()}
        for item in self.directives:
            if m := re.fullmatch(r"([\w.]+)\s*(\+?=)\s*(.*)", item):
                name, op, args = m.groups()
                extra[name] = [*extra.get(name, []), args] if op == "+=" else [args]
        return extra

    def placeholders(self) -> dict[str, str]:
        """`<placeholder>` or `fill <literal text>` -> the shell command whose output replaces it."""
        out = {}
        for item in self.directives:
            m = re.fullmatch(r"(<[^>]+>|fill \S+)\s*=\s*(.+)", item)
            if m:
                out[m.group(1).removeprefix("fill ")] = m.group(2)
        return out

    def commands(self) -> list[str]:
        """The block's commands as run: continuations joined, notes dropped, arguments appended,
        placeholders filled."""
        out = []
        for cmd in logical_lines(self.text):
            for name, args in self.extra_args().items():
                if runs(cmd, name):
                    cmd = f"{cmd} {' '.join(args)}"
            for placeholder, shell in self.placeholders().items():
                cmd = cmd.replace(placeholder, f'"$({shell})"')
            out.append(cmd)
        return out


def parse_readme(text: str, file: str = "README.md") -> list[Block]:
    """Every ```bash block, with its section and the `<!-- test ... -->` comment right above it."""
    blocks, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"#{1,2} (.*)", line):
            section = m.group(1).strip()
        if line.startswith("```"):
            lang = line[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if lang == "bash":
                blocks.append(Block(section, i + 1, "\n".join(lines[i + 1:end]), directives_above(lines, i), file))
            i = end + 1
            continue
        i += 1
    return blocks


def directives_above(lines: list[str], fence: int) -> list[str]:
    """Items of an HTML comment `<!-- test ... -->` that ends on the line just above line `fence`."""
    if fence == 0 or not lines[fence - 1].rstrip().endswith("-->"):
        return []
    start = fence - 1
    while start > 0 and "<!--" not in lines[start]:
        start -= 1
    body = " \n".join(lines[start:fence]).strip()
    m = re.fullmatch(r"<!--\s*test:?(.*)-->", body, re.S)
    if not m:
        return []
    items = [item.strip() for item in re.split(r"[;\n]", m.group(1)) if item.strip()]
    skip = next((k for k, item in enumerate(items) if item.startswith("skip")), None)
    if skip is not None:  # a skip's reason runs to the end of the comment, `;` and all
        items[skip:] = ["; ".join(items[skip:])]
    return items


def strip_comment(line: str) -> str:
    """`line` without a trailing `# note` (a `#` after whitespace, outside quotes)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def logical_lines(text: str) -> list[str]:
    """Commands of a bash block: `\\`-continued lines joined; blank and `#` lines dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        line = strip_comment(raw)
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        out.append((current + line.strip()).strip())
        current = ""
    return out


def runs(command: str, name: str) -> bool:
    """Does `command` run module or program `name` (`python -m name`, `torchrun ... -m name`, `name ...`)?"""
    words = command.split()
    if any(a == "-m" and b == name for a, b in zip(words, words[1:])):
        return True
    programs = [w for w in words if "=" not in w]  # skip leading VAR=value assignments
    return bool(programs) and programs[0] == name


def is_sweep(command: str) -> bool:
    """Is `command` a `minigpt.train -m` (`--multirun`) sweep?"""
    words = command.split()
    return runs(command, "minigpt.train") and bool({"-m", "--multirun"} & set(words[words.index("minigpt.train") + 1:]))


# ---------------------------------------------------------------------- links


def without_fences(text: str) -> str:
    """`text` without its fenced code blocks (whose `#` lines are not headings)."""
    return re.sub(r"^(```+|~~~+).*?^\1[^\n]*$", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """`text` without its fenced code blocks and inline code spans, where `[x](y)` is not a link."""
    return re.sub(r"(`+).+?\1", "", without_fences(text), flags=re.S)


def anchors(text: str) -> set[str]:
    """The `#anchor` of every heading of a markdown document, as GitHub makes them: lower case, punctuation
    dropped (letters, digits, `-` and `_` kept), spaces to `-`; a repeated one gets `-1`, `-2`, ..."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", without_fences(text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def broken_links(doc: Path) -> list[str]:
    """The relative links of `doc` whose file does not exist or whose `#anchor` names no heading."""
    broken = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...: not checked (no network)
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest.read_text(encoding="utf-8"))):
            broken.append(f"{target} (no heading #{anchor} in {dest})")
    return broken


@pytest.mark.parametrize("doc", documents(), ids=[d.relative_to(ROOT).as_posix() for d in documents()])
def test_every_relative_link_and_anchor_resolves(doc):
    assert broken_links(doc) == []


def test_every_doc_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in re.findall(r"\]\(([^)#\s]+)", prose(README.read_text()))}
    assert [d.name for d in documents()[1:] if d.resolve() not in linked] == []


def test_link_check_finds_what_github_would_not_resolve(tmp_path):
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "a.md"
    doc.write_text("# A: the `x`/y page\n## Twice\n## Twice\n```bash\n# not a heading\n```\n"
                   "[ok](#a-the-xy-page) [ok](#twice-1) [ok](../README.md) [web](https://x.org/#nope) `[code](#nope)`\n"
                   "[bad](#not-a-heading) [bad](#twice-2) [bad](b.md) [bad](../README.md#nope)\n")
    (tmp_path / "README.md").write_text("# R\n")
    assert anchors(doc.read_text()) == {"a-the-xy-page", "twice", "twice-1"}
    assert [b.split()[0] for b in broken_links(doc)] == ["#not-a-heading", "#twice-2", "b.md", "../README.md#nope"]


def test_the_config_table_names_every_preset_and_key():
    """The README's config-group table has, in each group's row, every preset in conf/<group>/ and every
    field of the group's dataclass (nested ones as `prepare.source`), so no key used later is missing."""
    import dataclasses

    from minigpt import config

    rows = dict(re.findall(r"^\| `(\w+)` \|(.*)$", README.read_text(encoding="utf-8"), flags=re.M))
    schemas = {"arch": config.ArchConfig, "model": config.ModelConfig, "optim": config.OptimConfig,
               "data": config.DataConfig, "train": config.TrainConfig, "logger": config.LoggerConfig,
               "cluster": config.ClusterConfig, "eval": config.EvalConfig, "experiment": None}

    def keys(schema, prefix=""):
        for f in dataclasses.fields(schema):
            nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(nested):
                yield from keys(type(nested), f"{prefix}{f.name}.")
            elif f.name != "name":
                yield prefix + f.name

    missing = []
    for group, schema in schemas.items():
        names = [p.stem for p in sorted((ROOT / "conf" / group).rglob("*.yaml"))]
        names += list(keys(schema)) if schema else []
        missing += [f"{group}: {name}" for name in names if f"`{name}`" not in rows.get(group, "")]
    assert missing == []


# ---------------------------------------------------------------------- running


BLOCKS = [block for doc in documents()
          for block in parse_readme(doc.read_text(encoding="utf-8"), doc.relative_to(ROOT).as_posix())]


def copy_repository(dest: Path) -> None:
    """The files git tracks or would track (not .venv, outputs/, caches), as a fresh clone has them."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but what .gitignore names
        ignore = shutil.ignore_patterns(".git", ".venv", "venv", "outputs", "multirun", "wandb", "__pycache__",
                                        "*.egg-info", ".pytest_cache")
        shutil.copytree(ROOT, dest, ignore=ignore)
        return
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def make_home(home: Path) -> None:
    """A HOME with `~/corpus/`: text and .jsonl documents for the `data=text` and `minigpt.prepare` examples."""
    import json

    corpus = home / "corpus"
    corpus.mkdir(parents=True)
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog, and the dog sleeps on." for i in range(600)]
    (corpus / "notes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(corpus / "docs.jsonl", "w", encoding="utf-8") as f:
        for i in range(0, 600, 20):
            f.write(json.dumps({"text": " ".join(lines[i:i + 20])}) + "\n")


class ReadmeRun:
    """One copy of the repository that the blocks run in, in order; remembers each block's outcome."""

    def __init__(self, work: Path, cache: Path):
        self.repo, self.home, self.tmp = work / "minigpt", work / "home", work / "tmp"
        copy_repository(self.repo)
        make_home(self.home)
        self.tmp.mkdir()
        venv_bin = str(Path(sys.executable).parent)  # `python`, `torchrun`, `lm_eval` of this environment
        self.env = {
            **os.environ,
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "MINIGPT_CACHE": str(cache),
            "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"),
            "HF_HUB_OFFLINE": "1",  # a block that needs the network is marked `skip internet`
            "HF_DATASETS_OFFLINE": "1",
            "PYTHONPATH": str(self.repo),
        }
        self.outcome: dict[str, str | None] = {}  # block id -> None (passed) or why it failed

    def ensure(self, block: Block) -> str | None:
        """Run `block` (and first the earlier blocks of its section, and the sections it is `after`)
        unless it already ran; returns None if it passed, else the reason."""
        if block.id in self.outcome:
            return self.outcome[block.id]
        for dep in self.dependencies(block):
            if dep.skip is None and (why := self.ensure(dep)) is not None:
                self.outcome[block.id] = f"block {dep.id}, which this one follows, failed: {why}"
                return self.outcome[block.id]
        self.outcome[block.id] = self.run(block)
        return self.outcome[block.id]

    def dependencies(self, block: Block) -> list[Block]:
        before = [b for b in BLOCKS if (b.file, b.section) == (block.file, block.section) and b.line < block.line]
        for section in block.after:
            named = [b for b in BLOCKS if b.section.startswith(section) and b.section != block.section]
            assert named, f"{block.id}: `after {section}` names no section of README.md or docs/*.md"
            before = named + before
        return before

    def run(self, block: Block) -> str | None:
        output = ""
        for command, planned in zip(block.commands(), block.planned()):
            if unfilled := PLACEHOLDER.findall(command):
                return f"{command!r} has a placeholder {unfilled[0]}: fill it with <!-- test: {unfilled[0]} = <shell> -->"
            if planned:
                done = self.plan(command)
                command = f"(planned, not run) {command}"
            else:
                done = subprocess.run(["bash", "-c", command], cwd=self.repo, env=self.env, capture_output=True,
                                      text=True, timeout=COMMAND_TIMEOUT_S)
            print(f"$ {command}\n(exit {done.returncode})\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
            if done.returncode != block.expected_exit:
                tail = (done.stdout + done.stderr)[-3000:]
                return f"`{command}` exited {done.returncode}, expected {block.expected_exit}:\n{tail}"
            output += done.stdout + done.stderr
        for text in block.expected_output:
            if text not in output:
                return f"the output does not contain {text!r}:\n{output[-3000:]}"
        return None


    def plan(self, command: str) -> subprocess.CompletedProcess:
        """`python -m minigpt.plan` on the arguments of the `minigpt.train -m` `command`, in this process (in the
        repository copy, with its environment): composing a job costs ~0.2 s here, training it seconds."""
        import contextlib
        import io
        import shlex

        from minigpt.plan.__main__ import main

        assert "$(" not in command and "|" not in command, f"a planned command is one plain command: {command}"
        words = shlex.split(command)
        out, err, saved = io.StringIO(), io.StringIO(), dict(os.environ)
        try:
            os.environ.update(self.env)
            with contextlib.chdir(self.repo), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(words[words.index("minigpt.train") + 1:])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return subprocess.CompletedProcess(words, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def readme_run(tmp_path_factory, token_cache) -> ReadmeRun:
    return ReadmeRun(tmp_path_factory.mktemp("readme"), token_cache)


def test_readme_has_runnable_blocks_and_known_directives():
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        for item in block.directives:
            known = (item.startswith(("skip ", "after ", "expect ")) or re.fullmatch(r"exit \d+|plan( all)?", item)
                     or re.fullmatch(r"[\w.]+\s*\+?=.*", item) or re.fullmatch(r"(<[^>]+>|fill \S+)\s*=.+", item))
            assert known, f"{block.id}: unknown test directive {item!r}"
        if block.skip is not None:
            kind = block.skip.split()[0]
            assert kind in SKIP_KINDS and len(block.skip.split()) > 2, \
                f"{block.id}: write `skip <{'|'.join(SKIP_KINDS)}> — <reason>`, not `skip {block.skip}`"
        else:  # what runs must write inside the repository copy, never into /tmp or elsewhere
            for command in block.commands():
                assert "/tmp/" not in command, f"{block.id}: write under outputs/ instead of /tmp: {command}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
@pytest.mark.slow
def test_readme_block(block, readme_run):
    if block.skip is not None:
        kind, _, reason = block.skip.partition(" ")
        pytest.skip(f"{block.id} needs {kind}: {reason.lstrip('—- ')}")
    why = readme_run.ensure(block)
    if why is not None:
        pytest.fail(f"{block.file} block at line {block.line} ({block.section}): {why}", pytrace=False)


def test_the_conventions_parse_as_the_readme_describes_them():
    text = "\n".join([
        "## Demo", "",
        "<!-- test: minigpt.eval += eval.hellaswag.limit=8; <run> = ls -d outputs/runs/* | tail -n 1 -->",
        "```bash",
        "python -m minigpt.train arch=rope 'x=\"a # b\"' \\",
        "    train.seed=2   # a note",
        "# output, not run",
        "python -m minigpt.eval <run> eval.hellaswag.limit=200",
        "```",
        "```text", "python -m minigpt.train never-run", "```",
        "<!--", "test: skip gpu — a reason; with a semicolon", "-->",
        "```bash", "torchrun --nproc_per_node=8 -m minigpt.train", "```",
        "<!-- test: exit 1; expect 1 failed; minigpt.train = train.num_iterations=2; fill x-0b01 = echo x-9 -->",
        "```bash", "python -m minigpt.train -m model.n_head=5,4 train.resume=outputs/x-0b01", "```",
    ])
    first, second, third = parse_readme(text)
    train, evaluate = first.commands()
    assert train == f"python -m minigpt.train arch=rope 'x=\"a # b\"' train.seed=2 {SHRINK['minigpt.train']}"
    assert evaluate == ('python -m minigpt.eval "$(ls -d outputs/runs/* | tail -n 1)" eval.hellaswag.limit=200 '
                        "eval.hellaswag.limit=8")
    assert (first.section, first.line, first.skip, first.expected_exit) == ("Demo", 4, None, 0)
    assert first.id == "README-L4-demo" and parse_readme(text, "docs/a_b.md")[0].id == "docs-a-b-L4-demo"
    assert second.skip == "gpu — a reason; with a semicolon"
    assert third.expected_exit == 1 and third.expected_output == ["1 failed"]
    assert third.commands() == ['python -m minigpt.train -m model.n_head=5,4 train.resume=outputs/"$(echo x-9)" '
                                "train.num_iterations=2"]


def test_plan_checks_the_later_sweeps_of_a_block_and_plan_all_every_one():
    text = "\n".join([
        "## Demo",
        "<!-- test: plan -->", "```bash",
        "python -m minigpt.train -m a=1,2", "python -m minigpt.train b=1", "python -m minigpt.compare x",
        "python -m minigpt.train --multirun c=1,2", "python -m minigpt.train -m d=1,2", "```",
        "<!-- test: plan all -->", "```bash", "python -m minigpt.train -m a=1,2", "python -m minigpt.compare x", "```",
        "```bash", "python -m minigpt.train -m a=1,2", "```",
    ])
    later, every, none = parse_readme(text)
    assert later.planned() == [False, False, False, True, True]
    assert every.planned() == [True, False] and none.planned() == [False]
