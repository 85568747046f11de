"""Daemon config: every key validated, one clear message naming the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config, prepare_folders

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "d.yaml"
    p.write_text(text, encoding="utf-8")
    return p


BASE = "inbox: in\noutbox: out\nwork: work\nfailed: failed\n"


def test_shipped_config_is_valid_and_documents_every_key():
    cfg = load_config(REPO / "config" / "daemon.yaml")
    text = (REPO / "config" / "daemon.yaml").read_text()
    assert cfg.umask == 0o027 and cfg.settle_s == 2.0 and cfg.allow_root is False
    for key in type(cfg).model_fields:
        assert f"{key}:" in text, f"config/daemon.yaml does not document '{key}'"


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.inbox == tmp_path / "in" and cfg.ledger_path == tmp_path / "work" / "state.db"
    assert cfg.status_path == tmp_path / "work" / "status.json"


@pytest.mark.parametrize(
    "extra, words",
    [
        ("settle_s: -1\n", ["settle_s"]),
        ("bogus: 1\n", ["bogus: unknown key"]),
        ("umask: '0999'\n", ["umask"]),
        ("windows: ['22:00-25:00']\n", ["windows", "25:00"]),
        ("report_time: 'noon'\n", ["report_time"]),
        ("params: {opt_steps: -3}\n", ["opt_steps"]),
        ("params: {no_such_param: 1}\n", ["no_such_param"]),
        ("workers: 0\n", ["workers"]),
        ("device: tpu\n", ["device"]),
        ("max_channels: 0\n", ["max_channels"]),
        ("max_sample_rate: 4000\n", ["max_sample_rate"]),
    ],
)
def test_bad_values_name_the_key(tmp_path, extra, words):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, BASE + extra))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "d.yaml") in msg
    for w in words:
        assert w in msg


def test_missing_folder_key_and_yaml_bomb(tmp_path):
    with pytest.raises(ConfigError, match="inbox: required"):
        load_config(_write(tmp_path, "outbox: o\nwork: w\nfailed: f\n"))
    bomb = BASE + "a: &a [x, x]\nb: &b [*a, *a]\n"
    with pytest.raises(ConfigError, match="alias"):
        load_config(_write(tmp_path, bomb))
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config: no such file$"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "extra, message",
    [
        ("workers: 0\n", "workers: must be an integer from 1 to 64, or 'auto' (got 0)"),
        ("settle_s: fast\n", "settle_s: must be a valid number (got 'fast')"),
        ("threads: 0\n", "threads: must be ≥ 1 and ≤ 256 (got 0)"),
        ("device: tpu\n", "device: must be auto, cpu, cuda or cuda:N (got 'tpu')"),
        ("umask: '0999'\n", "umask: '0999' is not an octal umask such as \"0027\""),
        ("inbox: 3\n", "inbox: must be a folder path (got 3)"),
        ("settle_s: .nan\n", "settle_s: must be a finite number"),
        ("params: {opt_steps: -3}\n", "params.opt_steps: must be ≥ 0 and ≤ 1000 (got -3)"),
        ("params: {bogus: 1}\n", "params.bogus: unknown key"),
        ("params: {model: x}\n", "params.model: a runtime option: set it at the top level of the config, not under params"),
        ("params: {preset: nope}\n", "params.preset: must be one of ['balanced', 'seed'] (got 'nope')"),
        ("params: {hop: 1024, nfft: 512}\n", "params: hop (1024) must not exceed nfft (512)"),
        # refused at start, not job by job: model none cannot run what needs an AST
        ("model: none\nparams: {preset: seed}\n", "params.preset: 'seed' needs an AST model (it sets detector: ast); "
         "without one (model none) use the query detector, or oracle with a segments file"),
        ("model: none\nparams: {detector: fused}\n", "params.detector: 'fused' needs an AST model; "
         "without one (model none) use the query detector, or oracle with a segments file"),
    ],
)
def test_messages_are_file_key_problem(tmp_path, extra, message):
    # One form for every config problem, FILE: KEY: problem, in words rather than pydantic's
    # internals ('workers.constrained-int' Input should be …; 'workers.literal['auto']' …).
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, BASE + extra))
    assert str(e.value) == f"{tmp_path / 'd.yaml'}: {message}"


def test_unreadable_config_is_one_plain_line(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"folder\.yaml: cannot read config: is a folder, not a file$"):
        load_config(tmp_path / "folder.yaml")
    (tmp_path / "latin1.yaml").write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: cannot read config: not UTF-8 text \(byte 0xe9 at offset \d+\)$"):
        load_config(tmp_path / "latin1.yaml")


def test_readme_references_name_existing_sections():
    # `config/daemon.yaml` pointed at README "Offline model", a section that does not exist.
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    headings = {m[1]: m.start() for m in re.finditer(r"^#+ (.+)$", readme, re.M)}
    refs = re.findall(r'README: "([^"]+)"(?:, (\*\*[^*]+\*\*))?', (REPO / "config" / "daemon.yaml").read_text())
    assert refs
    for section, lead in refs:
        assert section in headings, f"config/daemon.yaml names README section {section!r}, which does not exist"
        if lead:
            start = headings[section]
            end = min((i for i in headings.values() if i > start), default=len(readme))
            assert lead in readme[start:end], f"README section {section!r} has no paragraph {lead}"


def test_folders_inside_the_inbox_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="inside the inbox"):
        load_config(_write(tmp_path, "inbox: in\noutbox: in/out\nwork: work\nfailed: failed\n"))
    with pytest.raises(ConfigError, match="same folder"):
        load_config(_write(tmp_path, "inbox: in\noutbox: out\nwork: out\nfailed: failed\n"))


def test_umask_forms(tmp_path):
    assert load_config(_write(tmp_path, BASE + "umask: 0077\n")).umask == 0o077  # YAML octal
    assert load_config(_write(tmp_path, BASE + "umask: '0o022'\n")).umask == 0o022


def test_prepare_folders_creates_them(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    prepare_folders(cfg)
    for name in ("in", "out", "work", "failed"):
        assert (tmp_path / name).is_dir()


def test_prepare_folders_names_the_file_and_key(tmp_path):
    (tmp_path / "out").write_text("a file where the outbox should be")
    cfg = load_config(_write(tmp_path, BASE))
    with pytest.raises(ConfigError) as e:
        prepare_folders(cfg, "d.yaml")
    assert str(e.value).startswith(f"d.yaml: outbox: cannot create folder {tmp_path / 'out'}: ")


def test_workers_auto_resolves_to_cores_per_thread_on_cpu_and_two_on_cuda(tmp_path):
    import os

    from daemon.config import _available_memory, effective_workers

    cores = len(os.sched_getaffinity(0))
    mem_slots = max(1, (_available_memory() or 1 << 40) >> 30)
    auto1 = load_config(_write(tmp_path, BASE))
    assert auto1.workers == "auto" and auto1.threads == 1
    assert effective_workers(auto1, "fork") == min(cores, mem_slots, 64)
    auto2 = load_config(_write(tmp_path, BASE + "threads: 2\n"))
    assert effective_workers(auto2, "fork") == min(max(1, cores // 2), mem_slots)
    assert effective_workers(auto1, "thread") == 2
    fixed = load_config(_write(tmp_path, BASE + "workers: 3\n"))
    assert effective_workers(fixed, "fork") == 3 and effective_workers(fixed, "thread") == 3


def _tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[str, str]:
    root = tmp_path / "sys-fs-cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    (tmp_path / "proc-self-cgroup").write_text(proc)
    return str(tmp_path / "proc-self-cgroup"), str(root)


def test_cgroup_v2_limits_as_systemd_sets_them(tmp_path):
    from daemon.config import cgroup_cpu_limit, cgroup_memory_limit

    svc = "system.slice/sourcesep.service"
    proc, root = _tree(tmp_path, f"0::/{svc}\n", {f"{svc}/memory.max": "4294967296", f"{svc}/cpu.max": "150000 100000"})
    assert cgroup_memory_limit(proc, root) == 4 << 30
    assert cgroup_cpu_limit(proc, root) == 1.5
    proc, root = _tree(tmp_path / "u", f"0::/{svc}\n", {f"{svc}/memory.max": "max", f"{svc}/cpu.max": "max 100000"})
    assert cgroup_memory_limit(proc, root) is None and cgroup_cpu_limit(proc, root) is None


def test_cgroup_v1_and_hybrid_hierarchies(tmp_path):
    from daemon.config import cgroup_cpu_limit, cgroup_memory_limit

    proc = "4:memory:/box\n3:cpu,cpuacct:/box\n0::/\n"  # hybrid: the unified line has no files
    proc, root = _tree(tmp_path, proc, {
        "memory/box/memory.limit_in_bytes": str(3 << 30),
        "cpu,cpuacct/box/cpu.cfs_quota_us": "200000",
        "cpu,cpuacct/box/cpu.cfs_period_us": "100000",
    })
    assert cgroup_memory_limit(proc, root) == 3 << 30
    assert cgroup_cpu_limit(proc, root) == 2.0
    proc2, root2 = _tree(tmp_path / "unl", "4:memory:/\n3:cpu:/\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "cpu/cpu.cfs_quota_us": "-1",
        "cpu/cpu.cfs_period_us": "100000",
    })
    assert cgroup_memory_limit(proc2, root2) is None and cgroup_cpu_limit(proc2, root2) is None
    assert cgroup_memory_limit(str(tmp_path / "missing"), root) is None
