"""Unit tests for the pure parts of the real-kernel harness (tests/harness/vm.py).

No root, no VM: the runner is exercised with a fake `vng` script.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _pytest.junitxml import mangle_test_address

from harness import vm


# ----------------------------------------------------------------- results --

@pytest.mark.parametrize("nodeid", [
    "tests/kernel/test_a.py::test_x",
    "tests/kernel/test_a.py::TestX::test_y",
    "tests/kernel/sub/test_b.py::test_p[a-1]",
    "tests/kernel/test_a.py::test_p[with::colons/and.dots]",
])
def test_junit_key_matches_pytest_mangling(nodeid):
    names = mangle_test_address(nodeid)
    assert vm.junit_key(nodeid) == (".".join(names[:-1]), names[-1])


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="6">
<testcase classname="tests.kernel.test_a" name="test_ok" time="0.5"/>
<testcase classname="tests.kernel.test_a" name="test_bad" time="1.0">
  <failure message="AssertionError: nope">def test_bad():
&gt;   assert False
E   AssertionError: nope</failure>
  <system-out>--- Captured Out ---
hello</system-out>
</testcase>
<testcase classname="tests.kernel.test_a" name="test_skip" time="0">
  <skipped type="pytest.skip" message="needs cgroup v1">tests/kernel/test_a.py:9: needs cgroup v1</skipped>
</testcase>
<testcase classname="tests.kernel.test_a" name="test_xf" time="0">
  <skipped type="pytest.xfail" message="known">known</skipped>
</testcase>
<testcase classname="tests.kernel.test_a.TestC" name="test_teardown[p1]" time="0">
  <error message="failed on teardown with &quot;OSError&quot;">teardown text</error>
</testcase>
<testcase classname="tests.kernel.test_a" name="test_both" time="0">
  <failure message="call failed">call text</failure>
  <error message="teardown failed">teardown text</error>
</testcase>
</testsuite></testsuites>
"""


def test_parse_junit_outcomes():
    r = vm.parse_junit(JUNIT)
    k = "tests.kernel.test_a"
    assert r[(k, "test_ok")].outcome == "passed"
    assert r[(k, "test_ok")].duration == 0.5
    bad = r[(k, "test_bad")]
    assert bad.outcome == "failed"
    assert "AssertionError: nope" in bad.text and "assert False" in bad.text
    assert "hello" in bad.stdout
    assert r[(k, "test_skip")].outcome == "skipped"
    assert r[(k, "test_skip")].message == "needs cgroup v1"
    assert r[(k, "test_xf")].outcome == "xfailed"
    assert r[(k + ".TestC", "test_teardown[p1]")].outcome == "error"
    both = r[(k, "test_both")]
    assert both.outcome == "failed"
    assert "call text" in both.text and "teardown text" in both.text


def test_parse_junit_from_a_real_pytest_run(tmp_path):
    """The parser reads what this pytest version really writes."""
    (tmp_path / "test_real.py").write_text(textwrap.dedent("""
        import pytest
        def test_pass(): pass
        def test_fail():
            print("captured line")
            assert 1 == 2
        def test_skip(): pytest.skip("why not")
        @pytest.mark.xfail(reason="expected")
        def test_xfail(): assert False
        class TestK:
            @pytest.mark.parametrize("v", ["a/b"])
            def test_param(self, v): pass
    """))
    xml = tmp_path / "out.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-o", "junit_logging=all", f"--junitxml={xml}", str(tmp_path / "test_real.py")],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    results = vm.parse_junit(xml.read_text())
    by_name = {name: res for (_, name), res in results.items()}
    assert by_name["test_pass"].outcome == "passed"
    assert by_name["test_fail"].outcome == "failed"
    assert "assert 1 == 2" in by_name["test_fail"].text
    assert "captured line" in by_name["test_fail"].stdout
    assert by_name["test_skip"].outcome == "skipped"
    assert by_name["test_skip"].message == "why not"
    assert by_name["test_xfail"].outcome == "xfailed"
    assert results[vm.junit_key("test_real.py::TestK::test_param[a/b]")].outcome == "passed"


def _rec(nodeid, when, outcome, **kw):
    return json.dumps({"nodeid": nodeid, "when": when, "outcome": outcome, "duration": 0.1, **kw})


def test_parse_jsonl_folds_phases_and_tolerates_a_cut_last_line():
    lines = [
        _rec("t.py::ok", "setup", "passed"), _rec("t.py::ok", "call", "passed"),
        _rec("t.py::ok", "teardown", "passed"),
        _rec("t.py::bad", "setup", "passed"),
        _rec("t.py::bad", "call", "failed", longrepr="E assert 0",
             sections=[["Captured stdout call", "out\n"]]),
        _rec("t.py::bad", "teardown", "passed",
             sections=[["Captured stdout call", "out\n"], ["Captured stdout teardown", "td\n"]]),
        _rec("t.py::sk", "setup", "skipped", skip_reason="nope"),
        _rec("t.py::xf", "setup", "passed"),
        _rec("t.py::xf", "call", "skipped", wasxfail="known"),
        _rec("t.py::setup_err", "setup", "failed", longrepr="fixture broke"),
        _rec("t.py::hung", "setup", "passed"),
        '{"nodeid": "t.py::cut", "wh',
    ]
    r = vm.parse_jsonl(lines)
    assert r["t.py::ok"].outcome == "passed"
    assert r["t.py::bad"].outcome == "failed" and r["t.py::bad"].text == "E assert 0"
    assert r["t.py::bad"].stdout == "out\ntd\n"  # each section once
    assert r["t.py::sk"].outcome == "skipped" and r["t.py::sk"].message == "nope"
    assert r["t.py::xf"].outcome == "xfailed" and r["t.py::xf"].message == "known"
    assert r["t.py::setup_err"].outcome == "error"
    assert r["t.py::hung"].outcome == "incomplete"
    assert "t.py::cut" not in r


def test_dmesg_for_test_cuts_between_marks():
    a, b = "tests/kernel/t.py::a", "tests/kernel/t.py::a[1]"
    dmesg = "\n".join([
        "[ 1.0] boot",
        f"[ 2.0] {vm.KMSG_START}{a}", "[ 2.1] bpf: from a", f"[ 2.2] {vm.KMSG_END}{a}",
        f"[ 3.0] {vm.KMSG_START}{b}", "[ 3.1] from b, which never ended",
    ])
    assert vm.dmesg_for_test(dmesg, a) == "[ 2.1] bpf: from a"
    assert vm.dmesg_for_test(dmesg, b) == "[ 3.1] from b, which never ended"
    assert vm.dmesg_for_test(dmesg, "tests/kernel/t.py::never") == ""


def test_outcome_prefers_junit_then_jsonl():
    nodeid = "tests/kernel/test_a.py::test_x"
    o = vm.GuestOutcome(
        returncode=1, timed_out=False, wall_s=1, boot_s=1, console="",
        junit={vm.junit_key(nodeid): vm.GuestResult("failed", text="from junit")},
        jsonl={nodeid: vm.GuestResult("passed"), "tests/kernel/test_a.py::test_y": vm.GuestResult("passed")},
    )
    assert o.result_for(nodeid).text == "from junit"
    assert o.result_for("tests/kernel/test_a.py::test_y").outcome == "passed"
    assert o.result_for("tests/kernel/test_a.py::test_z") is None


def test_artifact_dir_name_is_a_single_safe_component():
    name = vm.artifact_dir_name("tests/kernel/test_a.py::TestC::test_p[../x y]")
    assert "/" not in name and " " not in name and name not in (".", "..")
    assert name == vm.artifact_dir_name("tests/kernel/test_a.py::TestC::test_p[../x y]")


def test_tail_and_dmesg_since_script():
    text = "\n".join(str(i) for i in range(100))
    assert vm.tail(text, 3).splitlines()[-3:] == ["97", "98", "99"]
    assert "97 earlier lines omitted" in vm.tail(text, 3)
    assert vm.tail("a\nb", 3) == "a\nb"
    dmesg = "[1] boot\n[2] virtme-ng-init: starting script\n[3] bpf: something\n"
    assert vm.dmesg_since_script(dmesg) == "[3] bpf: something\n"
    assert vm.dmesg_since_script("[1] no mark\n") == "[1] no mark\n"


# ------------------------------------------------------------------ kernel --

def _boot(tmp_path, *names):
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    return tmp_path


def test_select_kernels_takes_the_newest_image_of_each_default_series(tmp_path, monkeypatch):
    boot = _boot(tmp_path, "vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-56-amd64",
                 "vmlinuz-6.1.0-99-cloud-amd64", "vmlinuz-6.1.0-98-rt-amd64",
                 "vmlinuz-6.12.9-custom", "initrd.img-6.1.0-60-amd64", "vmlinuz-6.1.0-56-amd64.old",
                 "vmlinuz-6.12.117+deb12-amd64", "vmlinuz-6.12.117+deb12-cloud-amd64")
    assert vm.select_kernels(boot, env={}) == [boot / "vmlinuz-6.1.0-56-amd64", boot / "vmlinuz-6.12.117+deb12-amd64"]
    monkeypatch.setattr(vm, "DEFAULT_SERIES", ((6, 1),))
    assert vm.select_kernels(boot, env={}) == [boot / "vmlinuz-6.1.0-56-amd64"]


def test_select_kernels_override_and_errors(tmp_path):
    img, other = tmp_path / "bzImage", tmp_path / "vmlinuz-x"
    img.write_bytes(b"x")
    other.write_bytes(b"x")
    assert vm.select_kernels(tmp_path, env={vm.ENV_KERNEL: str(img)}) == [img]
    assert vm.select_kernels(tmp_path, env={vm.ENV_KERNEL: f"{img}, {other}"}) == [img, other]
    with pytest.raises(vm.HarnessError, match="nope is not a file"):
        vm.select_kernels(tmp_path, env={vm.ENV_KERNEL: f"{img},{tmp_path / 'nope'}"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(vm.HarnessError, match="linux-image-amd64"):
        vm.select_kernels(empty, env={})


def test_kernel_label():
    assert vm.kernel_label(Path("/boot/vmlinuz-6.12.117+deb12-amd64")) == "6.12.117+deb12-amd64"


def test_kernel_config_problem(tmp_path):
    img = tmp_path / "vmlinuz-6.1.0-56-amd64"
    img.write_bytes(b"x")
    assert vm.kernel_config_problem(img) is None  # no config: cannot tell
    cfg = tmp_path / "config-6.1.0-56-amd64"
    cfg.write_text('CONFIG_BPF_SYSCALL=y\nCONFIG_BPF_LSM=y\nCONFIG_DEBUG_INFO_BTF=y\n'
                   'CONFIG_LSM="landlock,lockdown,yama,apparmor,bpf"\n')
    assert vm.kernel_config_problem(img) is None
    cfg.write_text('CONFIG_BPF_SYSCALL=y\n# CONFIG_BPF_LSM is not set\nCONFIG_DEBUG_INFO_BTF=y\n'
                   'CONFIG_LSM="landlock,lockdown,yama,apparmor"\n')
    problem = vm.kernel_config_problem(img)
    assert "CONFIG_BPF_LSM is not y" in problem and "CONFIG_LSM" in problem


def test_debian_kernel_version():
    assert vm.debian_kernel_version("vmlinuz-6.1.0-56-amd64") == (6, 1, 0, 56)
    assert vm.debian_kernel_version("vmlinuz-6.12.117+deb12-amd64") == (6, 12, 117, 12)
    assert vm.debian_kernel_version("vmlinuz-6.1.0-56-cloud-amd64") is None
    assert vm.debian_kernel_version("vmlinuz-6.18.0-custom") is None


# ---------------------------------------------------------------- commands --

def test_build_vng_command():
    cmd = vm.build_vng_command("/v/bin/vng", Path("/boot/vmlinuz-6.1.0-56-amd64"),
                               Path("/tmp/res"), Path("/tmp/res/run-in-guest.sh"))
    assert cmd[:3] == ["/v/bin/vng", "--run", "/boot/vmlinuz-6.1.0-56-amd64"]
    assert "--disable-kvm" in cmd and "--force-9p" in cmd
    assert "--qemu-opts=-accel tcg,thread=single" in cmd  # one host thread per guest
    assert cmd[cmd.index("--memory") + 1] == "2G"
    assert cmd[cmd.index("--cpus") + 1] == "2"
    assert cmd[cmd.index("--rwdir") + 1] == "/tmp/res"
    assert cmd[-2:] == ["--", "/bin/sh /tmp/res/run-in-guest.sh"]
    kvm = vm.build_vng_command("vng", Path("k"), Path("r"), Path("s"), kvm=True, memory="4G", cpus=4)
    assert "--disable-kvm" not in kvm and "--verbose" not in kvm
    assert not any(arg.startswith("--qemu-opts") for arg in kvm)  # no TCG under KVM
    assert kvm[kvm.index("--memory") + 1] == "4G" and kvm[kvm.index("--cpus") + 1] == "4"
    threads = vm.build_vng_command("vng", Path("k"), Path("r"), Path("s"), one_thread=False)
    assert "--disable-kvm" in threads and not any(arg.startswith("--qemu-opts") for arg in threads)
    verbose = vm.build_vng_command("vng", Path("k"), Path("r"), Path("s"), verbose=True)
    assert "--verbose" in verbose and verbose[-2] == "--"


def test_build_guest_script(tmp_path):
    nodeids = ["tests/kernel/test_a.py::test_x", "tests/kernel/test_a.py::test_p[it's a b]"]
    script = vm.build_guest_script("/repo/.venv/bin/python", Path("/repo"), Path("/tmp/res"), nodeids)
    assert f"export {vm.ENV_IN_GUEST}=1" in script
    assert "export PYTHONDONTWRITEBYTECODE=1" in script
    assert f"export {vm.ENV_ARTIFACTS}=/tmp/res/artifacts" in script
    pytest_line = next(line for line in script.splitlines() if " -m pytest " in line)
    argv = shlex.split(pytest_line)
    assert argv[:3] == ["/repo/.venv/bin/python", "-m", "pytest"]
    assert argv[argv.index("-p") + 1] == "no:cacheprovider"
    assert "--junitxml=/tmp/res/junit.xml" in argv
    assert argv[-2:] == nodeids
    path = tmp_path / "s.sh"
    path.write_text(script)
    subprocess.run(["sh", "-n", str(path)], check=True)  # valid shell


# ------------------------------------------------------------------ runner --

def _fake_vng(tmp_path, body: str) -> str:
    """A stand-in for vng: gets the same argv; $RES is the --rwdir value."""
    p = tmp_path / "bin" / "vng"
    p.parent.mkdir()
    p.write_text(textwrap.dedent("""\
        #!/bin/sh
        while [ $# -gt 0 ]; do
            case "$1" in --rwdir) RES="$2"; shift;; --) shift; break;; esac
            shift
        done
        """) + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def _run(tmp_path, vng, timeout_s=60):
    run = vm.GuestRun(vng=vng, kernel=Path("/boot/k"), repo=tmp_path, results_dir=tmp_path / "res",
                      nodeids=["tests/kernel/test_a.py::test_ok"], python=sys.executable,
                      timeout_s=timeout_s)
    run.start()
    return run, run.wait()


def test_runner_collects_results_console_and_artifacts(tmp_path):
    art = "tests_kernel_test_a.py_test_ok"
    vng = _fake_vng(tmp_path, textwrap.dedent(f"""\
        echo started > "$RES/guest-started"
        echo "console line from the guest"
        echo "stderr line" >&2
        mkdir -p "$RES/artifacts/{art}" && echo "agent says hi" > "$RES/artifacts/{art}/agent.log"
        cat > "$RES/junit.xml" <<'EOF'
        <testsuites><testsuite><testcase classname="tests.kernel.test_a" name="test_ok"/></testsuite></testsuites>
        EOF
        exit 0
        """))
    run, o = _run(tmp_path, vng)
    assert o.returncode == 0 and not o.timed_out and o.problem is None
    assert o.result_for("tests/kernel/test_a.py::test_ok").outcome == "passed"
    assert "console line from the guest" in o.console and "stderr line" in o.console
    assert o.boot_s is not None and o.boot_s < 30
    assert run.artifacts_for("tests/kernel/test_a.py::test_ok") == {"agent.log": "agent says hi\n"}
    # The guest script the fake was pointed at exists and is what vm builds.
    assert (tmp_path / "res" / vm.SCRIPT_NAME).read_text().startswith("#!/bin/sh")


def test_runner_kills_on_timeout_and_says_so(tmp_path):
    vng = _fake_vng(tmp_path, 'echo started > "$RES/guest-started"\nsleep 120 &\nwait\n')
    t0 = time.monotonic()
    _, o = _run(tmp_path, vng, timeout_s=1.5)
    assert time.monotonic() - t0 < 25
    assert o.timed_out
    assert "timed out after 2 s" in o.problem and "no junit.xml" in o.problem
    assert o.result_for("tests/kernel/test_a.py::test_ok") is None


def test_runner_reports_a_guest_that_never_started_its_script(tmp_path):
    vng = _fake_vng(tmp_path, 'echo "Kernel panic - not syncing" >&2\nexit 255\n')
    _, o = _run(tmp_path, vng)
    assert o.returncode == 255
    assert "never reached its test script" in o.problem and "status 255" in o.problem
    assert "Kernel panic" in o.console


# -------------------------------------------------------------------- pool --

def test_guests_at_once_defaults_to_the_cpu_count_and_refuses_nonsense():
    assert vm.guests_at_once({}, cpu_count=2) == 2
    assert vm.guests_at_once({}, cpu_count=1) == 1
    assert vm.guests_at_once({vm.ENV_PARALLEL: " 1 "}, cpu_count=8) == 1
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(vm.HarnessError, match=vm.ENV_PARALLEL):
            vm.guests_at_once({vm.ENV_PARALLEL: bad}, cpu_count=2)


def _pool_runs(tmp_path, vng, kernels, timeout_s=60):
    return [vm.GuestRun(vng=vng, kernel=Path(f"/boot/vmlinuz-{k}"), repo=tmp_path,
                        results_dir=tmp_path / "res" / k, nodeids=["tests/kernel/test_a.py::test_ok"],
                        python=sys.executable, timeout_s=timeout_s)
            for k in kernels]


# Each fake guest writes when it started and ended (monotonic enough at 0.1 s)
# and takes 0.25 s, so overlap is visible in the files.
_TIMED_GUEST = textwrap.dedent("""\
    date +%s.%N > "$RES/t-start"
    echo started > "$RES/guest-started"
    sleep 0.25
    date +%s.%N > "$RES/t-end"
    exit 0
    """)


def _span(run):
    return (float((run.results_dir / "t-start").read_text()), float((run.results_dir / "t-end").read_text()))


def test_pool_runs_guests_side_by_side_up_to_its_bound_and_keeps_their_order(tmp_path):
    vng = _fake_vng(tmp_path, _TIMED_GUEST)
    runs = _pool_runs(tmp_path, vng, ["a", "b", "c"])
    pool = vm.GuestPool(runs, at_once=2)
    assert pool.fill() is None
    assert [r.kernel.name for r in pool.started] == ["vmlinuz-a", "vmlinuz-b"]
    done, problem = pool.finish(poll_s=0.05)
    assert problem is None
    assert [run.kernel.name for run, _ in done] == ["vmlinuz-a", "vmlinuz-b", "vmlinuz-c"]
    assert all(o.returncode == 0 and not o.timed_out for _, o in done)
    (a0, a1), (b0, b1), (c0, c1) = (_span(r) for r in runs)
    assert b0 < a1 and a0 < b1  # a and b overlapped
    assert c0 >= min(a1, b1) - 0.05  # c waited for one of them to end


def test_pool_of_one_runs_one_guest_after_the_other(tmp_path):
    vng = _fake_vng(tmp_path, _TIMED_GUEST)
    runs = _pool_runs(tmp_path, vng, ["a", "b"])
    pool = vm.GuestPool(runs, at_once=1)
    pool.fill()
    pool.finish(poll_s=0.05)
    (a0, a1), (b0, b1) = (_span(r) for r in runs)
    assert b0 >= a1 - 0.05


def test_pool_bounds_each_guest_by_its_own_timeout_and_abort_kills_the_rest(tmp_path):
    vng = _fake_vng(tmp_path, 'echo started > "$RES/guest-started"\nsleep 120 &\nwait\n')
    runs = _pool_runs(tmp_path, vng, ["a", "b"], timeout_s=0.3)
    pool = vm.GuestPool(runs, at_once=2)
    pool.fill()
    t0 = time.monotonic()
    done, _ = pool.finish(poll_s=0.05)
    assert time.monotonic() - t0 < 25
    assert all(o.timed_out for _, o in done)
    (tmp_path / "x").mkdir()
    slow = _pool_runs(tmp_path / "x", _fake_vng(tmp_path / "x", 'sleep 120 &\nwait\n'), ["a"])
    pool = vm.GuestPool(slow, at_once=1)
    pool.fill()
    pool.abort()
    assert slow[0].proc.poll() is not None


def test_pool_says_which_guest_could_not_start_and_starts_no_more(tmp_path):
    runs = _pool_runs(tmp_path, str(tmp_path / "no-such-vng"), ["a", "b"])
    pool = vm.GuestPool(runs, at_once=1)
    problem = pool.fill()
    assert problem is not None and "no-such-vng" in problem and " for a:" in problem
    assert pool.started == [] and pool.pending == []
