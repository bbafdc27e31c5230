"""Load, fill, attach and pin enforcer's BPF-LSM programs. The only writer to the kernel.

Order, and why:
  1. take the compiled object from the cache (enforcer.kernel.objcache) or
     compile it with bcc against BTF-generated headers (no kernel headers
     needed), in a process of its own (enforcer.kernel.compile_worker: the
     agent never maps clang and LLVM), and cache it: clang is most of a
     start's cost, and the object depends only on the kernel's BTF and
     enforcer's sources;
  2. create the maps and load every program (the verifier runs) - all or none;
  3. fill every map from the MapPlan - before anything is attached, so the
     programs never run with an empty policy;
  4. attach every program - all or none;
  5. pin links and maps under /sys/fs/bpf/enforcer/<instance>/ so enforcement
     outlives this process, then retire older instances. Old and new overlap
     for a moment (both enforce): there is never a window without enforcement.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from enforcer import abi, registry
from enforcer.kernel import bpfsys, headers, objcache, protected, selfid
from enforcer.kernel.barrier import RcuBarrier
from enforcer.kernel.bpfobject import CompiledObject
from enforcer.kernel.compile_worker import CompileWorkerError, compile_in_worker
from enforcer.kernel.btf import BtfInfo, forget_parsed, load_btf
from enforcer.kernel.features import feature_cflags
from enforcer.generations import GenerationTable
from enforcer.kernel.maps import CapacityError, PolicyMaps, ReloadError, check_capacity
from enforcer.kernel.objload import LoadedObject, ObjectLoadError
from enforcer.kernel.ringbuf import RingBuffer, RingBufferError
from enforcer.kernel.selfid import AgentIdentity, NO_AGENT
from enforcer.plan import MapPlan, PlanDiff

log = logging.getLogger(__name__)

PIN_ROOT = Path("/sys/fs/bpf/enforcer")
BPFFS_ROOT = Path("/sys/fs/bpf")
DEFAULT_BTF = Path("/sys/kernel/btf/vmlinux")

#: Hex digits of the compiled object's key in an instance's name: a later
#: agent adopts an instance only if it runs the very same programs.
INSTANCE_KEY_CHARS = 16


class LoadError(RuntimeError):
    """Enforcement could not be established; nothing was left attached."""


def default_bpf_dir() -> Path:
    """Where bpf/*.c live: $ENFORCER_BPF_DIR, the installed copy, or the checkout."""
    env = os.environ.get("ENFORCER_BPF_DIR")
    if env:
        return Path(env)
    for candidate in (Path(__file__).resolve().parents[2] / "bpf", Path("/usr/share/enforcer/bpf")):
        if (candidate / "enforcer.bpf.c").is_file():
            return candidate
    raise LoadError("BPF sources not found: set ENFORCER_BPF_DIR to the directory holding enforcer.bpf.c")


def host_mount_namespace() -> int:
    """Inode number of the initial mount namespace (PID 1's).

    Our own namespace is not used: under systemd sandboxing the agent runs in
    a private mount namespace of its own.
    """
    try:
        return os.stat("/proc/1/ns/mnt").st_ino
    except PermissionError as error:
        raise LoadError(
            "cannot read /proc/1/ns/mnt (the host's mount namespace, which defines host and "
            "container scope): the agent needs CAP_SYS_PTRACE and the host's PID namespace"
        ) from error


def check_hook_signatures(btf: BtfInfo) -> None:
    """Refuse a kernel whose hooks changed: an LSM program reads its arguments
    by position, so a different signature must not be guessed at."""
    problems = []
    for spec in registry.HOOKS:
        actual = tuple(btf.lsm_hook_params(spec.name))
        if len(actual) not in (len(spec.params), len(spec.params) + spec.optional_count):
            expected = ((f"[{', '.join(spec.optional_head)}, ]" if spec.optional_head else "") + ", ".join(spec.params)
                        + (f"[, {', '.join(spec.optional_tail)}]" if spec.optional_tail else ""))
            problems.append(
                f"LSM hook {spec.name}: this kernel passes ({', '.join(actual)}), "
                f"enforcer's program expects ({expected})"
            )
    if problems:
        raise LoadError("kernel hook signatures differ from what enforcer supports:\n  " + "\n  ".join(problems))


def ensure_bpffs() -> None:
    """Pins need a bpf filesystem at /sys/fs/bpf; mount one if systemd did not."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and fields[1] == str(BPFFS_ROOT) and fields[2] == "bpf":
                return
    BPFFS_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        bpfsys.mount("bpf", str(BPFFS_ROOT))
    except OSError as error:
        reason = error.strerror or str(error)
        raise LoadError(f"no bpf filesystem at {BPFFS_ROOT} and mounting one failed: {reason}") from error


def instance_dirs(pin_root: Path = PIN_ROOT) -> List[Path]:
    """Pinned instances, oldest first (names start with a nanosecond timestamp)."""
    if not pin_root.is_dir():
        return []
    return sorted((p for p in pin_root.iterdir() if p.is_dir()), key=lambda p: p.name)


def remove_instance(directory: Path) -> None:
    """Unpin an instance: its links go, so its programs detach."""
    for pin in directory.iterdir():
        pin.unlink()
    directory.rmdir()


@dataclass(frozen=True)
class Startup:
    """Where a start's time went, for the agent's `started` record and the benchmark."""

    object_origin: str  # "cached" or "compiled"
    phases: Tuple[Tuple[str, float], ...]  # (phase, seconds), in order

    @property
    def seconds(self) -> float:
        return sum(seconds for _phase, seconds in self.phases)

    def to_json(self) -> Dict[str, object]:
        return {"object": self.object_origin, "seconds": round(self.seconds, 3),
                "phases": {phase: round(seconds, 3) for phase, seconds in self.phases}}


class _Stopwatch:
    def __init__(self) -> None:
        self.phases: List[Tuple[str, float]] = []
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self._last))
        self._last = now


class Enforcement:
    """One agent instance's loaded programs, maps and pins."""

    def __init__(self, loaded: LoadedObject, plan: MapPlan, instance_dir: Path, host_mntns: int,
                 barrier: RcuBarrier, agent: AgentIdentity = NO_AGENT, policy_dir: Optional[Path] = None) -> None:
        self._loaded = loaded
        self._barrier = barrier
        self._ring: Optional[RingBuffer] = None
        self.plan = plan
        self.instance_dir = instance_dir
        self.startup = Startup("", ())
        self.maps = PolicyMaps(loaded.map_fd, host_mntns, barrier, agent=agent)
        self.generations = GenerationTable()
        self.policy_dir = policy_dir  # the policy file's directory, for the tamper rules that protect it

    def protect(self, kind: abi.ObjectKind, fds: Dict[str, int]) -> None:
        """Name these objects of the instance to the tamper rules (by id)."""
        protected.add(self._loaded.map_fd("protected_objects"), kind, fds, abi.ProtectedOwner.INSTANCE)

    def protect_barrier(self) -> None:
        """Name this agent's reload barrier maps, forgetting the previous agent's."""
        forgotten = protected.replace_agent_objects(self._loaded.map_fd("protected_objects"), self._barrier.fds())
        if forgotten:
            log.info("protected_objects: forgot %d map id(s) of the previous agent's reload barrier", forgotten)

    def fill(self) -> None:
        """Write the first plan (generation 1) before anything is attached."""
        self.maps.fill(self.plan)
        self.generations.add(self.maps.generation, self.plan)

    def apply(self, new_plan: MapPlan) -> PlanDiff:
        """Reload: switch the kernel to `new_plan` in one step (see PolicyMaps.apply).
        The policy directory is looked up again if `new_plan` protects it: host
        root may have replaced it."""
        self.maps.agent = selfid.with_policy_dir(self.maps.agent, protected_policy_dir(new_plan, self.policy_dir))
        changes = self.maps.apply(self.plan, new_plan)
        self.plan = new_plan
        self.generations.add(self.maps.generation, new_plan)
        return changes

    def retire_previous(self) -> None:
        """After a reported reload: empty the policy slot it left (PolicyMaps.retire)."""
        self.maps.retire()

    def stats(self) -> Dict[str, int]:
        return sum_stats(self._loaded.map_fd("stats"))

    # --- events -------------------------------------------------------------------

    def on_event(self, callback: Callable[[abi.EventRecord], None]) -> None:
        size = ctypes.sizeof(abi.EventRecord)

        def record(data: bytes) -> bool:
            self._budget -= 1
            if len(data) < size:
                log.error("short event record: %d bytes, expected %d", len(data), size)
            else:
                callback(abi.EventRecord.from_buffer_copy(data[:size]))
            return self._budget > 0  # False ends this poll: its budget is spent

        self._budget = 0
        try:
            self._ring = RingBuffer(self._loaded.map_fd("events"), record)
        except RingBufferError as error:
            raise LoadError(f"cannot read events: {error}") from error

    def poll(self, timeout_ms: int, budget: int, wake_fd: Optional[int] = None) -> bool:
        """Deliver at most `budget` records, waiting up to `timeout_ms` for the
        first, or until `wake_fd` is readable (RingBuffer.wait).

        True when the ring buffer was emptied, False when records may remain.
        """
        self._budget = budget
        if self._ring is not None:
            if wake_fd is None:
                self._ring.poll(timeout_ms)
            else:
                self._ring.wait(timeout_ms, wake_fd)
        return self._budget > 0

    def close(self) -> None:
        """Release this process's fds. Pinned links keep enforcing."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._barrier.close()
        self._loaded.close()


def lsm_hook_ids(btf: BtfInfo) -> Dict[str, int]:
    """The BTF id of each hook enforcer attaches to, by hook name."""
    return {spec.name: btf.lsm_hook_id(spec.name) for spec in registry.HOOKS}


def compiled_object(btf_path: Path, bpf_dir: Path, cache_root: Path) -> Tuple[CompiledObject, str, str]:
    """The object for this kernel and these sources, cached or compiled now
    (and cached); how it was obtained; its key."""
    programs = registry.PROGRAM_HOOKS
    inputs = objcache.ObjectInputs(
        btf_sha256=headers.file_sha256(btf_path),
        kernel_release=os.uname().release,
        layout_version=headers.LAYOUT_VERSION,
        cflags=(*headers.GENERATED_TYPES_CFLAGS, *feature_cflags(btf_path), *registry.cflags()),
        sources=objcache.source_digests(bpf_dir),
        programs=programs,
        compiler=objcache.compiler_identity(),
    )
    objects_dir = cache_root / objcache.OBJECTS_SUBDIR
    key = inputs.key()
    found = objcache.lookup(objects_dir, key)
    if found.obj is not None:
        log.info("compiled object %s from the cache", found.path.name)
        return found.obj, "cached", key
    log.info("compiling enforcer's BPF programs with bcc, in a process of its own: cached object %s: %s",
             found.path, found.why_not)
    try:
        obj = compile_in_worker(btf_path, bpf_dir, cache_root / "btf")
    except CompileWorkerError as error:
        raise LoadError(f"compiling {bpf_dir / 'enforcer.bpf.c'} failed: {error}") from error
    why_not = objcache.store(objects_dir, key, obj)
    if why_not:
        log.warning("the compiled object is not cached, the next start compiles again: %s", why_not)
    return obj, "compiled", key


def adoptable_instance(pin_root: Path, key: str, obj: CompiledObject) -> Optional[Path]:
    """The newest pinned instance running exactly `obj` (same object key), with
    every link and map pinned; None if there is none."""
    tag = key[:INSTANCE_KEY_CHARS]
    for instance in reversed(instance_dirs(pin_root)):
        if not instance.name.endswith(f"-{tag}"):
            continue
        wanted = [f"link_{p.hook}" for p in obj.programs] + [f"map_{m.name}" for m in obj.maps]
        if all((instance / name).exists() for name in wanted):
            return instance
    return None


def protected_policy_dir(plan: MapPlan, policy_dir: Optional[Path]) -> Optional[Path]:
    """`policy_dir` when a tamper rule of `plan` protects it, else None: the
    kernel reads its identity only then, so it is not looked up (mountinfo,
    stat of it and of the directories above it) for nothing."""
    return policy_dir if plan.watch & abi.Watch.TAMPER_POLICY else None


def _adopt(instance: Path, obj: CompiledObject, plan: MapPlan, policy_dir: Optional[Path]) -> Enforcement:
    """Take over a pinned instance: its programs stay attached (no second set
    is loaded, no window), its maps are brought to `plan` by the reload
    transaction. Raises LoadError with everything this opened closed again."""
    try:
        loaded = LoadedObject.from_pins(instance, obj)
    except ObjectLoadError as error:
        raise LoadError(f"opening the pinned maps of {instance.name} failed: {error}") from error
    try:
        for spec in obj.maps:
            info = bpfsys.map_info(loaded.map_fd(spec.name), what=f"pinned map {spec.name}")
            found = (info.type, info.key_size, info.value_size, info.max_entries)
            if found != (spec.map_type, spec.key_size, spec.value_size, spec.max_entries):
                raise LoadError(f"pinned map {spec.name} of {instance.name} is not the map the programs were "
                                f"compiled with: {found}")
        barrier = RcuBarrier()
    except (OSError, LoadError) as error:
        loaded.close()
        raise LoadError(str(error)) from error
    enforcement = Enforcement(loaded, plan, instance, host_mount_namespace(), barrier,
                              selfid.current(instance.parent, protected_policy_dir(plan, policy_dir)), policy_dir)
    try:
        enforcement.protect_barrier()
        enforcement.maps.adopt(plan)
    except (OSError, ReloadError) as error:
        enforcement.close()
        raise LoadError(f"bringing {instance.name} to this policy failed: {error}") from error
    enforcement.generations.add(enforcement.maps.generation, plan)
    return enforcement


def _retire_others(pin_root: Path, keep: Path) -> None:
    for older in instance_dirs(pin_root):
        if older != keep:
            log.info("retiring previous instance %s", older.name)
            remove_instance(older)


def load(
    plan: MapPlan,
    *,
    btf_path: Path = DEFAULT_BTF,
    bpf_dir: Optional[Path] = None,
    cache_root: Optional[Path] = None,
    pin_root: Path = PIN_ROOT,
    pin: bool = True,
    policy_dir: Optional[Path] = None,
) -> Enforcement:
    """Establish enforcement of `plan`, all or nothing.

    policy_dir: the policy file's directory, for the tamper rules that
    protect it (None: none).

    cache_root: where header trees and compiled objects are kept
    ($ENFORCER_CACHE_DIR, else /var/cache/enforcer).
    """
    try:
        check_capacity(plan)
    except CapacityError as error:
        raise LoadError(str(error)) from error
    watch = _Stopwatch()
    bpf_dir = bpf_dir or default_bpf_dir()
    cache_root = cache_root or headers.enforcer_cache_root()
    btf = load_btf(btf_path)
    check_hook_signatures(btf)
    hook_ids = lsm_hook_ids(btf)
    del btf  # no reference kept: see _return_startup_heap
    watch.lap("btf")
    obj, origin, key = compiled_object(btf_path, bpf_dir, cache_root)
    watch.lap("compile" if origin == "compiled" else "cache")

    instance = adoptable_instance(pin_root, key, obj) if pin else None
    if instance is not None:
        try:
            enforcement = _adopt(instance, obj, plan, policy_dir)
        except LoadError as error:
            log.warning("not adopting the pinned instance %s, loading a new one beside it: %s", instance.name, error)
        else:
            watch.lap("adopt")
            _retire_others(pin_root, instance)
            _return_startup_heap()
            enforcement.startup = Startup("adopted", tuple(watch.phases))
            log.info("adopted the pinned instance %s in %.1f s: its programs stayed attached, its maps now hold "
                     "this policy", instance.name, enforcement.startup.seconds)
            return enforcement

    try:
        loaded = LoadedObject(obj, hook_ids)
    except ObjectLoadError as error:
        raise LoadError(f"the kernel refused to load enforcer's programs: {error}") from error
    watch.lap("load")

    try:
        barrier = RcuBarrier()
    except OSError as error:
        loaded.close()
        raise LoadError(f"creating the reload barrier (an array-of-maps map) failed: {error}") from error
    try:
        agent = selfid.current(_pin_root_made(pin_root) if pin else None, protected_policy_dir(plan, policy_dir))
    except OSError as error:
        loaded.close()
        barrier.close()
        raise LoadError(f"creating the pin directory {pin_root} failed: {error}") from error
    enforcement = Enforcement(loaded, plan, Path(), host_mount_namespace(), barrier, agent, policy_dir)
    try:
        # before anything is attached: from the first attached moment on, the
        # tamper rules know every map and program of this instance
        enforcement.protect(abi.ObjectKind.MAP, loaded.map_fds)
        enforcement.protect(abi.ObjectKind.PROG, loaded.program_fds)
        enforcement.protect_barrier()
        enforcement.fill()
    except LoadError:
        enforcement.close()
        raise
    except (OSError, CapacityError) as error:
        enforcement.close()
        raise LoadError(f"filling the policy maps failed: {error}") from error
    watch.lap("fill")

    try:
        links = loaded.attach()
    except ObjectLoadError as error:
        enforcement.close()  # nothing is attached: attach is all or none
        raise LoadError(f"attaching enforcer's programs failed: {error}") from error
    try:
        enforcement.protect(abi.ObjectKind.LINK, links)
    except OSError as error:
        enforcement.close()
        raise LoadError(f"naming the links to the tamper rules failed: {error}") from error
    watch.lap("attach")

    if pin:
        try:
            enforcement.instance_dir = _pin(loaded, links, pin_root, key)
        except OSError as error:
            enforcement.close()
            raise LoadError(f"pinning under {pin_root} failed: {error}") from error
        watch.lap("pin")
    _return_startup_heap()
    enforcement.startup = Startup(origin, tuple(watch.phases))
    log.info("started in %.1f s (%s object): %s", enforcement.startup.seconds, origin,
             ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in watch.phases))
    return enforcement


def _return_startup_heap() -> None:
    """Give back to the system what loading needed and running does not: the
    parsed BTF (~35 MiB); glibc keeps freed memory in its arenas otherwise,
    and the agent would carry it for its whole life. (Compiling, whose
    clang/LLVM heap was ~50 MiB more, happens in another process.)"""
    forget_parsed()
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to trim this way
    libc.malloc_trim(0)


def _pin_root_made(pin_root: Path) -> Path:
    """The pin directory, on a bpffs, made if missing (its identity goes into
    the settings before the programs are attached)."""
    ensure_bpffs()
    pin_root.mkdir(parents=True, exist_ok=True)
    return pin_root


def _pin(loaded: LoadedObject, links: Dict[str, int], pin_root: Path, key: str) -> Path:
    """Pin every link and every map (a later agent adopts them all) under a new
    instance directory named <ns timestamp>-<pid>-<object key prefix>; retire older ones."""
    _pin_root_made(pin_root)
    instance = pin_root / f"{time.time_ns()}-{os.getpid()}-{key[:INSTANCE_KEY_CHARS]}"
    instance.mkdir()
    try:
        for hook, fd in links.items():
            bpfsys.obj_pin(fd, str(instance / f"link_{hook}"))
        for name in loaded.map_fds:
            bpfsys.obj_pin(loaded.map_fd(name), str(instance / f"map_{name}"))
    except OSError:
        remove_instance(instance)
        raise
    _retire_others(pin_root, instance)
    return instance


def unload(pin_root: Path = PIN_ROOT) -> List[str]:
    """Remove every pinned instance: enforcement stops once no process holds the links."""
    removed = []
    for directory in instance_dirs(pin_root):
        remove_instance(directory)
        removed.append(directory.name)
    if pin_root.is_dir() and not any(pin_root.iterdir()):
        pin_root.rmdir()
    return removed


def sum_stats(fd: int) -> Dict[str, int]:
    """Totals of the per-CPU counters in the `stats` map behind `fd`."""
    cpus = bpfsys.possible_cpus()
    totals = {}
    for stat in abi.Stat:
        values = (ctypes.c_uint64 * cpus)()
        bpfsys.map_lookup(fd, ctypes.c_uint32(int(stat)), values, what="map stats")  # type: ignore[arg-type]
        totals[stat.name.lower()] = int(sum(values))
    return totals


def read_pinned_stats(instance: Path) -> Dict[str, int]:
    """Sum the per-CPU counters of a pinned instance (no bcc needed)."""
    fd = bpfsys.obj_get(str(instance / "map_stats"))
    try:
        return sum_stats(fd)
    finally:
        os.close(fd)


def read_pinned_rules(instance: Path, slot: int) -> List[abi.RuleConfig]:
    """The rule configs of policy slot `slot` of a pinned instance, rule 1 first."""
    fd = bpfsys.obj_get(str(instance / "map_rules"))
    try:
        configs = []
        for rule in range(1, abi.MAX_RULES + 1):
            config = abi.RuleConfig()
            bpfsys.map_lookup(fd, ctypes.c_uint32(abi.rule_index(slot, rule)), config, what="map rules")
            configs.append(config)
        return configs
    finally:
        os.close(fd)


def read_pinned_settings(instance: Path) -> abi.Settings:
    fd = bpfsys.obj_get(str(instance / "map_settings"))
    try:
        settings = abi.Settings()
        bpfsys.map_lookup(fd, ctypes.c_uint32(0), settings, what="map settings")
        return settings
    finally:
        os.close(fd)
