"""Upgrade plans generated from real diffs of two source trees (otpvm.appup).

Each test writes two versions of a small application into tmp_path
(``1.0/app/...`` and ``1.1/app/...``) and checks the exact plan.
"""

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from otpvm import appup
from otpvm.appup import (
    AddModule,
    Apply,
    CannotSwitch,
    DeleteModule,
    LoadModule,
    PlanFileError,
    RestartRequired,
    Update,
    UpdateSupervisor,
    UpgradePlan,
    make_plan,
    validate,
)

UTIL = '''
def double(x):
    return 2 * x
'''

CACHE = '''
from otpvm.gen_server import GenServer, Ok, Reply


class Cache(GenServer):
    state_vsn = 1

    def init(self, args):
        return Ok({})

    def handle_call(self, key, from_, state):
        return Reply(state.get(key), state)
'''

SUP = '''
from otpvm import supervisor
from otpvm.supervisor import ChildSpec, SupFlags


class Top(supervisor.Supervisor):
    def init(self, args):
        return SupFlags(strategy="one_for_one"), []
'''

LOOP = '''
import otpvm


async def loop(state):
    while True:
        msg = await otpvm.receive()
        state = state + 1
'''


def write(root: Path, files: dict[str, str]) -> Path:
    """Writes an application tree; ``app/__init__.py`` comes for free."""
    files = {"app/__init__.py": "", **files}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def trees(tmp_path, old: dict[str, str], new: dict[str, str]) -> tuple[Path, Path]:
    return write(tmp_path / "1.0", old), write(tmp_path / "1.1", new)


def plan_of(tmp_path, old, new, **kwargs) -> UpgradePlan:
    return make_plan(*trees(tmp_path, old, new), **kwargs)


# ---------------------------------------------------------------- the diff


def test_comment_and_line_number_changes_are_no_change(tmp_path):
    moved = "# a new header comment\n\n\n" + CACHE.replace(
        "    def init", "    # why: nothing yet\n\n    def init").replace(
        "return Reply(state.get(key), state)", "return Reply(state.get(key), state)  # fast")
    plan = plan_of(tmp_path, {"app/cache.py": CACHE, "app/util.py": UTIL},
                   {"app/cache.py": moved, "app/util.py": "\n\n" + UTIL + "\n# end\n"})
    assert plan.instructions == ()
    assert plan.down == ()
    assert (plan.from_vsn, plan.to_vsn, plan.source) == ("1.0", "1.1", "generated")
    assert "nothing to do" in plan.format()


def test_making_a_plan_executes_no_user_code(tmp_path):
    body = f"open({str(tmp_path / 'ran')!r}, 'w').close()\nraise SystemExit(3)\n"
    old, new = trees(tmp_path, {"app/__init__.py": body, "app/util.py": body + UTIL},
                     {"app/__init__.py": body, "app/util.py": body + UTIL + "\n# v2\nY = 2\n"})
    plan = make_plan(old, new)
    assert plan.instructions == (LoadModule("app.util"),)
    assert validate(plan, new) == []
    assert not (tmp_path / "ran").exists()


def test_a_constant_of_another_type_is_a_change(tmp_path):
    # 1 == 1.0 == True, but the code differs
    plan = plan_of(tmp_path, {"app/util.py": "X = 1\n"}, {"app/util.py": "X = 1.0\n"})
    assert plan.instructions == (LoadModule("app.util"),)


def test_plain_function_change_is_load_module(tmp_path):
    plan = plan_of(tmp_path, {"app/util.py": UTIL}, {"app/util.py": UTIL.replace("2 *", "3 *")})
    assert plan.instructions == (LoadModule("app.util"),)
    assert plan.down == (LoadModule("app.util"),)


def test_state_vsn_bump_is_an_advanced_update(tmp_path):
    new = CACHE.replace("state_vsn = 1", "state_vsn = 2")
    plan = plan_of(tmp_path, {"app/cache.py": CACHE}, {"app/cache.py": new})
    assert plan.instructions == (Update("app.cache", advanced=True, classes=("Cache",)),)


def test_code_change_change_is_an_advanced_update(tmp_path):
    new = CACHE + '''
    def code_change(self, old_vsn, state, extra):
        return dict(state)
'''
    plan = plan_of(tmp_path, {"app/cache.py": CACHE}, {"app/cache.py": new})
    assert plan.instructions == (Update("app.cache", advanced=True, classes=("Cache",)),)


def test_changed_callback_without_state_vsn_change_is_a_soft_update(tmp_path):
    new = CACHE.replace("state.get(key)", "state.get(key, 0)")
    plan = plan_of(tmp_path, {"app/cache.py": CACHE}, {"app/cache.py": new})
    assert plan.instructions == (Update("app.cache", advanced=False, classes=("Cache",)),)


def test_behaviours_found_through_module_imports_and_app_base_classes(tmp_path):
    base = '''
from otpvm import gen_statem
import otpvm.gen_event


class Machine(gen_statem.GenStatem):
    def callback_mode(self):
        return "handle_event_function"


class Handler(otpvm.gen_event.EventHandler[int]):
    pass
'''
    derived = '''
from .base import Machine


class Door(Machine):
    def handle_event(self, *args):
        return None


class Plain:
    def method(self):
        return 1
'''
    new = derived.replace("return None", "return 1").replace("return 1\n", "return 2\n", 1)
    old_files = {"app/base.py": base, "app/door.py": derived}
    plan = plan_of(tmp_path, old_files, {**old_files, "app/door.py": new})
    assert plan.instructions == (
        Update("app.door", advanced=False, classes=("Door",), deps=("app.base",)),)


def test_helper_change_in_a_behaviour_module_is_load_module(tmp_path):
    old = CACHE + "\n\ndef helper():\n    return 1\n"
    plan = plan_of(tmp_path, {"app/cache.py": old},
                   {"app/cache.py": old.replace("return 1", "return 2")})
    assert plan.instructions == (LoadModule("app.cache"),)


def test_supervisor_change_is_update_supervisor(tmp_path):
    new = SUP.replace('strategy="one_for_one"', 'strategy="one_for_all"')
    plan = plan_of(tmp_path, {"app/sup.py": SUP}, {"app/sup.py": new})
    assert plan.instructions == (UpdateSupervisor("app.sup", classes=("Top",)),)


def test_added_and_removed_modules(tmp_path):
    plan = plan_of(tmp_path, {"app/old.py": UTIL}, {"app/new.py": UTIL})
    assert plan.instructions == (AddModule("app.new"), DeleteModule("app.old", mode="soft"))
    assert plan.down == (AddModule("app.old"), DeleteModule("app.new"))


def test_a_whole_package_added(tmp_path):
    old = write(tmp_path / "1.0", {})
    new = write(tmp_path / "1.1", {"extra/__init__.py": "", "extra/x.py": UTIL})
    plan = make_plan(old, new)
    assert plan.instructions == (AddModule("extra"), AddModule("extra.x"))


def test_hand_written_receive_loop_changed_cannot_switch(tmp_path):
    plan = plan_of(tmp_path, {"app/conn.py": LOOP},
                   {"app/conn.py": LOOP.replace("state + 1", "state + 2")})
    [instr] = plan.instructions
    assert type(instr) is CannotSwitch and instr.name == "app.conn"
    assert "loop()" in instr.reason and "become" in instr.reason
    assert plan.down == plan.instructions


def test_receive_loop_that_ends_in_become_can_switch(tmp_path):
    old = LOOP + "        otpvm.become(loop, state)\n"
    plan = plan_of(tmp_path, {"app/conn.py": old},
                   {"app/conn.py": old.replace("state + 1", "state + 2")})
    assert plan.instructions == (LoadModule("app.conn"),)


def test_become_added_only_in_the_new_version_does_not_help_running_loops(tmp_path):
    # Processes in v1's loop never reach v2's become: they run v1's frame.
    new = LOOP.replace("state + 1", "state + 2") + "        otpvm.become(loop, state)\n"
    plan = plan_of(tmp_path, {"app/conn.py": LOOP}, {"app/conn.py": new})
    assert [type(i) for i in plan.instructions] == [CannotSwitch]


def test_unchanged_receive_loop_does_not_block_other_changes(tmp_path):
    old = LOOP + UTIL
    plan = plan_of(tmp_path, {"app/conn.py": old},
                   {"app/conn.py": old.replace("2 *", "3 *")})
    assert plan.instructions == (LoadModule("app.conn"),)


def test_native_code_and_otpvm_changes_require_a_restart(tmp_path):
    old = {"app/fast.cpython-311-x86_64-linux-gnu.so": "binary 1",
           "otpvm/__init__.py": "", "otpvm/kernel.py": UTIL}
    new = {"app/fast.cpython-311-x86_64-linux-gnu.so": "binary 2",
           "otpvm/__init__.py": "", "otpvm/kernel.py": UTIL.replace("2 *", "3 *")}
    plan = plan_of(tmp_path, old, new)
    assert [(type(i), i.module) for i in plan.instructions] == [
        (RestartRequired, "app.fast"), (RestartRequired, "otpvm.kernel")]
    assert "native" in plan.instructions[0].reason
    assert "otpvm itself" in plan.instructions[1].reason


# ---------------------------------------------------------------- order


def test_order_callers_before_callees_with_deps(tmp_path):
    # alphabetical order is the reverse of the call order
    old = {"app/a_store.py": UTIL,
           "app/b_cache.py": "from app.a_store import double\n" + UTIL,
           "app/c_api.py": "from app import b_cache\n" + UTIL}
    new = {k: v.replace("2 *", "3 *") for k, v in old.items()}
    plan = plan_of(tmp_path, old, new)
    assert plan.instructions == (
        LoadModule("app.c_api", deps=("app.b_cache",)),
        LoadModule("app.b_cache", deps=("app.a_store",)),
        LoadModule("app.a_store"))
    assert plan.down == tuple(reversed(plan.instructions))


def test_order_through_an_unchanged_module(tmp_path):
    old = {"app/a_store.py": UTIL,
           "app/b_cache.py": "from . import a_store\n",
           "app/c_api.py": "import app.b_cache\n" + UTIL}
    new = {**old, "app/a_store.py": UTIL.replace("2 *", "3 *"),
           "app/c_api.py": old["app/c_api.py"].replace("2 *", "3 *")}
    plan = plan_of(tmp_path, old, new)
    assert [i.module for i in plan.instructions] == ["app.c_api", "app.a_store"]


def test_order_keeps_input_order_inside_a_cycle(tmp_path):
    old = {"app/a0.py": UTIL,
           "app/m1.py": "from app import m2, a0\n" + UTIL,
           "app/m2.py": "from app import m1\nfrom app.a0 import double\n" + UTIL,
           "app/z9.py": "def f():\n    from .m2 import double\n" + UTIL}
    new = {k: v.replace("2 *", "3 *") for k, v in old.items()}
    plan = plan_of(tmp_path, old, new)
    assert [i.module for i in plan.instructions] == ["app.z9", "app.m1", "app.m2", "app.a0"]
    assert plan.instructions[1].deps == ("app.a0", "app.m2")


# ---------------------------------------------------------------- the down plan


def test_down_plan_mirrors_the_up_plan(tmp_path):
    old = {"app/cache.py": CACHE, "app/gone.py": UTIL, "app/sup.py": SUP}
    new = {"app/cache.py": "from app import fresh\n" + CACHE.replace("= 1", "= 2"),
           "app/fresh.py": UTIL, "app/sup.py": SUP.replace("one_for_one", "rest_for_one")}
    plan = plan_of(tmp_path, old, new)
    assert plan.instructions == (
        Update("app.cache", advanced=True, classes=("Cache",), deps=("app.fresh",)),
        AddModule("app.fresh"),
        DeleteModule("app.gone"),
        UpdateSupervisor("app.sup", classes=("Top",)))
    assert plan.down == (
        UpdateSupervisor("app.sup", classes=("Top",)),
        AddModule("app.gone"),
        DeleteModule("app.fresh"),
        Update("app.cache", advanced=True, classes=("Cache",), deps=("app.fresh",)))
    text = plan.format()
    assert "downgrade 1.1 -> 1.0" in text and "('down', '1.0')" in text


# ---------------------------------------------------------------- the override file


def test_override_file_is_used(tmp_path):
    old, new = trees(tmp_path, {"app/cache.py": CACHE, "app/util.py": UTIL},
                     {"app/cache.py": CACHE.replace("= 1", "= 2"),
                      "app/util.py": UTIL.replace("2 *", "3 *")})
    (new / "upgrade.py").write_text(textwrap.dedent('''
        """Reviewed by hand."""
        from otpvm.appup import Apply, Update

        PLAN = [
            Update("app.cache", advanced=True, extra={"ttl": -1}, classes=["Cache"]),
            Apply("app.migrate:run", [1, "x", None, (2.5,)]),
        ]
    '''))
    plan = make_plan(old, new)
    assert plan.source == str(new / "upgrade.py")
    assert plan.instructions == (
        Update("app.cache", advanced=True, extra={"ttl": -1}, classes=("Cache",)),
        Apply("app.migrate:run", (1, "x", None, (2.5,))))
    # no DOWN: the mirror, without the Apply (it cannot be inverted)
    assert plan.down == (plan.instructions[0],)
    # the diff's change that the file does not mention is pointed out
    assert len(plan.notes) == 1 and plan.notes[0].startswith("app.util: the diff says")
    assert make_plan(old, new, override=False).instructions == (
        Update("app.cache", advanced=True, classes=("Cache",)), LoadModule("app.util"))


def test_override_file_with_down(tmp_path):
    old, new = trees(tmp_path, {"app/util.py": UTIL}, {"app/util.py": UTIL})
    (new / "upgrade.py").write_text(
        'PLAN = [LoadModule("app.util")]\nDOWN = [Apply("app.util:double", [1])]\n')
    plan = make_plan(old, new)
    assert plan.down == (Apply("app.util:double", (1,)),)


def test_generated_plan_written_as_an_override_reads_back(tmp_path):
    old = {"app/cache.py": CACHE, "app/gone.py": UTIL}
    new = {"app/cache.py": "from app import util\n" + CACHE.replace("= 1", "= 2"),
           "app/util.py": UTIL}
    old_dir, new_dir = trees(tmp_path, old, new)
    plan = make_plan(old_dir, new_dir)
    (new_dir / "upgrade.py").write_text(plan.to_source())
    again = make_plan(old_dir, new_dir)
    assert (again.instructions, again.down, again.notes) == (plan.instructions, plan.down, ())


@pytest.mark.parametrize("text, complaint", [
    ("PLAN = [__import__('os').system('touch pwned')]", "not __import__('os').system(...)"),
    ("PLAN = [LoadModule(__import__('os').getcwd())]", "not __import__('os').getcwd(...)"),
    ("PLAN = [LoadModule(eval('1'))]", "may be called, not eval(...)"),
    ("PLAN = [print('hi')]", "may be called, not print(...)"),
    ("import os\nPLAN = []", "only PLAN = [...] and DOWN = [...]"),
    ("PLAN = [LoadModule('a' + 'b')]", "is not allowed"),
    ("PLAN = [LoadModule(name) for name in ['a']]", "is not allowed"),
    ("PLAN = [LoadModule(*['a'])]", "no *args"),
    ("PLAN = [LoadModule.__init__]", "is not allowed"),
    ("PLAN = [1]", "PLAN must be a list of instructions"),
    ("DOWN = []", "no PLAN"),
    ("PLAN = [DeleteModule('app.util', mode='hard')]", "mode must be 'soft' or 'brutal'"),
    ("PLAN = [Update('app util')]", "dotted module name"),
    ("PLAN = [Apply('app.util', [])]", "'pkg.mod:function'"),
    ("PLAN = [", "not valid Python"),
])
def test_bad_override_file_is_refused(tmp_path, text, complaint):
    old, new = trees(tmp_path, {"app/util.py": UTIL}, {"app/util.py": UTIL})
    (new / "upgrade.py").write_text(text + "\n")
    with pytest.raises(PlanFileError) as info:
        make_plan(old, new)
    assert complaint in str(info.value)
    assert str(new / "upgrade.py") in str(info.value)
    assert not (Path.cwd() / "pwned").exists() and not (new / "pwned").exists()


# ---------------------------------------------------------------- instructions and JSON


def test_instructions_check_their_arguments():
    with pytest.raises(TypeError, match="must be a module name"):
        LoadModule(3)
    with pytest.raises(TypeError, match="advanced must be True or False"):
        Update("app.x", advanced="yes")
    with pytest.raises(ValueError, match="class names"):
        Update("app.x", classes=["not a name"])
    with pytest.raises(TypeError, match="list of names"):
        LoadModule("app.x", deps="app.y")
    with pytest.raises(TypeError, match="reason must be a str"):
        CannotSwitch("app.x", None)


def test_json_round_trip(tmp_path):
    plan = plan_of(tmp_path, {"app/cache.py": CACHE, "app/gone.py": UTIL},
                   {"app/cache.py": CACHE.replace("= 1", "= 2")})
    data = json.loads(plan.to_json())
    assert data["instructions"] == [
        {"op": "Update", "name": "app.cache", "advanced": True, "extra": None,
         "classes": ["Cache"], "deps": []},
        {"op": "DeleteModule", "name": "app.gone", "mode": "soft", "deps": []}]
    assert [appup.instruction_from_dict(d) for d in data["down"]] == list(plan.down)


# ---------------------------------------------------------------- validation


def test_validate_reports_a_body_that_does_not_compile(tmp_path):
    old, new = trees(tmp_path, {"app/util.py": UTIL}, {"app/util.py": "def double(:\n"})
    plan = make_plan(old, new)
    assert plan.instructions == (LoadModule("app.util"),)
    [problem] = validate(plan, new)
    assert (problem.level, problem.module) == ("error", "app.util")
    assert "does not compile: SyntaxError" in problem.message


def test_validate_warns_about_module_state(tmp_path):
    new_util = UTIL + textwrap.dedent('''
        import itertools
        __all__ = ["double"]
        CACHE = {}
        COUNTER = itertools.count()
        LIMIT = 10

        def bump():
            global LIMIT
            LIMIT += 1
    ''')
    old, new = trees(tmp_path, {"app/util.py": UTIL}, {"app/util.py": new_util})
    problems = validate(make_plan(old, new), new)
    assert [(p.level, p.line, p.message.split(" ")[0]) for p in problems] == [
        ("warning", 12, "`global"), ("warning", 7, "CACHE"), ("warning", 8, "COUNTER")]


def test_validate_warns_about_state_holding_classes_of_upgraded_modules(tmp_path):
    types = "import enum\n\nclass Color(enum.Enum):\n    RED = 1\n"
    server = CACHE.replace("return Ok({})", "return Ok(Color.RED)").replace(
        "from otpvm", "from app.types import Color\nfrom otpvm")
    old, new = trees(tmp_path, {"app/types.py": types, "app/server.py": server},
                     {"app/types.py": types + "    BLUE = 2\n", "app/server.py": server})
    plan = make_plan(old, new)
    assert plan.instructions == (LoadModule("app.types"),)
    [problem] = validate(plan, new)
    assert (problem.level, problem.module) == ("warning", "app.server")
    assert "Cache uses app.types.Color from the upgraded module app.types" in problem.message


def test_validate_with_prepare_runs_the_bodies(tmp_path):
    old, new = trees(tmp_path, {"app/util.py": UTIL, "app/bad.py": UTIL},
                     {"app/util.py": UTIL + "\n", "app/bad.py": "raise RuntimeError('boom')\n",
                      "app/fresh.py": UTIL})
    plan = make_plan(old, new)
    calls = []

    def prepare(name, source, *, filename=None):
        calls.append((name, Path(filename).name))
        namespace: dict = {}
        exec(compile(source, filename, "exec"), namespace)
        return name.upper()

    [problem] = validate(plan, new, prepare=prepare)
    assert calls == [("app.bad", "bad.py"), ("app.fresh", "fresh.py")]
    assert (problem.level, problem.module) == ("error", "app.bad")
    assert problem.message == "its body failed: RuntimeError: boom"
    prepared, _ = appup.prepare_bodies(plan, new, prepare)
    assert prepared == {"app.fresh": "APP.FRESH"}


# ---------------------------------------------------------------- arguments


def test_bad_folders_and_packages(tmp_path):
    good = write(tmp_path / "1.0", {})
    with pytest.raises(appup.AppupError, match="the new tree .* is not a folder"):
        make_plan(good, tmp_path / "missing")
    with pytest.raises(appup.AppupError, match="package 'nope' is in neither"):
        make_plan(good, good, ["nope"])


def test_packages_limit_the_diff(tmp_path):
    old, new = trees(tmp_path, {"other/__init__.py": "", "other/x.py": UTIL},
                     {"other/__init__.py": "X = 1\n", "app/util.py": UTIL})
    assert make_plan(old, new, ["other"]).instructions == (LoadModule("other"),
                                                           DeleteModule("other.x"))
    assert make_plan(old, new, ["app"]).instructions == (AddModule("app.util"),)


# ---------------------------------------------------------------- the command line


def otpvm_command():
    script = Path(sysconfig.get_path("scripts")) / "otpvm"
    if not script.exists():
        pytest.skip("the otpvm command is not installed here (pip install .)")
    return [str(script)]


def run_cli(*args):
    return subprocess.run([*otpvm_command(), "appup", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_cli_prints_the_plan(tmp_path):
    old, new = trees(tmp_path, {"app/cache.py": CACHE},
                     {"app/cache.py": CACHE.replace("= 1", "= 2"), "app/util.py": UTIL})
    done = run_cli(old, new)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("upgrade 1.0 -> 1.1 (generated")
    assert lines[1] == "   1. Update('app.cache', advanced=True, classes=['Cache'])"
    assert lines[2] == "      suspend, code_change migrates the state, resume"
    assert lines[3] == "   2. AddModule('app.util')"
    assert "downgrade 1.1 -> 1.0" in done.stdout


def test_cli_json_and_packages(tmp_path):
    old, new = trees(tmp_path, {"app/util.py": UTIL, "lib/__init__.py": ""},
                     {"app/util.py": UTIL.replace("2 *", "3 *"), "lib/__init__.py": "X = []\n"})
    done = run_cli(old, new, "--json", "--package", "lib")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["instructions"] == [{"op": "LoadModule", "name": "lib", "deps": []}]
    assert data["problems"] == [{"level": "warning", "module": "lib", "line": 1,
                                 "message": "X is mutable module state: its contents are lost "
                                 "at a switch (the new version has its own)"}]


def test_cli_errors(tmp_path):
    old, new = trees(tmp_path, {"app/util.py": UTIL}, {"app/util.py": "def (\n"})
    done = run_cli(old, new)
    assert done.returncode == 1
    assert "error: app.util: does not compile" in done.stdout
    done = run_cli(old, tmp_path / "missing")
    assert done.returncode == 2 and done.stdout == ""
    assert "otpvm appup: error: the new tree" in done.stderr and "is not a folder" in done.stderr
    (new / "upgrade.py").write_text("PLAN = [__import__('os').system('touch pwned')]\n")
    done = run_cli(old, new)
    assert done.returncode == 2
    assert "may be called, not __import__('os').system(...)" in done.stderr
    assert not (tmp_path / "pwned").exists()


def test_python_m_otpvm_appup_help():
    done = subprocess.run([sys.executable, "-m", "otpvm", "appup", "--help"],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0
    assert "usage: otpvm appup" in done.stdout
