/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * enforcer's BPF-LSM programs, compiled by bcc against kernel types generated
 * from BTF (enforcer/kernel/btf.py). All policy arrives through maps filled by
 * enforcer/compile.py; all constants through -D flags from enforcer/abi.py
 * (map sizes: enforcer/registry.py, which lists every map and program here).
 *
 * Decision order, the same for every hook:
 *   1. cheap rejection: the object is not one we could ever protect (for
 *      file_open: the superblock is not procfs, cgroup v1, sysfs or
 *      binfmt_misc) -> allow;
 *   2. the object is classified into a rule number via the policy maps;
 *   3. only then, on this rare path, the acting task's executable, cgroup and
 *      uid are resolved and the allowlists consulted;
 *   4. enforce -> -EPERM, audit -> 0; both emit one event.
 */
#include "enforcer.h"

#ifndef ENFORCER_SETTINGS_ENTRIES
#error "enforcer.bpf.c needs the map sizes from enforcer.registry.cflags()"
#endif

/* The BTF-generated kernel types come without libc or kernel macros. */
#ifndef NULL
#define NULL ((void *)0)
#endif
#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif

/* Kernel facts (include/uapi/linux/magic.h, include/linux/fs.h, fcntl.h);
 * #defines are not part of BTF, so they are spelled here. */
#define PROC_SUPER_MAGIC	0x9fa0
#define CGROUP_SUPER_MAGIC	0x27e0eb
#define SYSFS_MAGIC		0x62656572
#define BINFMTFS_MAGIC		0x42494e4d
#define TMPFS_MAGIC		0x01021994
#define HUGETLBFS_MAGIC		0x958458f6
#define OVERLAYFS_SUPER_MAGIC	0x794c7630
#define BPF_FS_MAGIC		0xcafe4a11
#define ENF_PTRACE_MODE_ATTACH	0x02
#define ENF_FMODE_READ		0x1
#define ENF_FMODE_WRITE		0x2
#define ENF_O_TRUNC		01000
#define ENF_ATTR_MODE		(1 << 0)
#define ENF_ATTR_UID		(1 << 1)
#define ENF_ATTR_GID		(1 << 2)
#define ENF_ATTR_SIZE		(1 << 3)
#define ENF_MS_BIND		4096
#define ENF_MS_REMOUNT		32
#define ENF_MS_PROPAGATION	((1 << 17) | (1 << 18) | (1 << 19) | (1 << 20))	/* UNBINDABLE, PRIVATE, SLAVE, SHARED */
#define ENF_EPERM		1
#define ENF_PROT_EXEC		0x4
#define ENF_VM_EXEC		0x4
#define ENF_S_IFMT		00170000
#define ENF_S_IFREG		0100000

#ifndef ENFORCER_KERNFS_PARENT
#define ENFORCER_KERNFS_PARENT parent	/* "__parent" since Linux 6.15 */
#endif

/* Names compared by the file hooks, with their lengths. */
#define NAME_SYSRQ_TRIGGER	"sysrq-trigger"
#define NAME_SYSRQ		"sysrq"
#define NAME_KERNEL		"kernel"
#define NAME_SYS		"sys"
#define NAME_RELEASE_AGENT	"release_agent"
#define NAME_CGROUP_FS		"cgroup"	/* cgroup v1's filesystem type; v2 is "cgroup2" */
#define NAME_CORE_PATTERN	"core_pattern"
#define NAME_MODPROBE		"modprobe"
#define NAME_HOTPLUG		"hotplug"
#define NAME_UEVENT_HELPER	"uevent_helper"
#define NAME_REGISTER		"register"
#define NAME_STATUS		"status"
#define SHORT_NAME_LEN		16	/* longest compared name + NUL fits */

/* Byte 0 of an LPM key is the namespace byte; the path follows. Strings are
 * written at (offset & STR_MASK) with up to ENFORCER_LPM_DATA_LEN bytes, so
 * the scratch buffer is twice that plus the namespace byte and slack. */
#define STR_MASK		(ENFORCER_LPM_DATA_LEN - 1)
#define PATH_SCRATCH_LEN	(2 * ENFORCER_LPM_DATA_LEN + 8)

struct path_buf {
	__u32 prefixlen;	/* layout of struct enforcer_lpm_key ... */
	__u8 data[PATH_SCRATCH_LEN];	/* ... with room to write past it */
	__u32 len;		/* bytes of path after the namespace byte */
	__u32 dir_len;		/* bytes of "<directory>/" of the last component */
	__u32 truncated;
};

struct scratch {
	struct path_buf obj;	/* the protected object */
	struct path_buf aux;	/* rename destination */
	struct path_buf exe;	/* acting task's executable */
	struct path_buf cgroup;	/* acting task's cgroup v2 path */
	void *stack[ENFORCER_PATH_WALK_STEPS];	/* dentries or kernfs nodes */
	__u32 steps;		/* walk results, kept in map memory on purpose */
	__u32 reached;
	__u32 crossed;		/* the last walk crossed a mount point */
	void *top;		/* the dentry the last walk stopped at */
};

/* What a hook has found out about the action by the time a rule matched. */
struct verdict_ctx {
	__u32 slot;		/* policy slot this run decides with (read once) */
	__u32 generation;	/* that slot's policy generation, for the event */
	__u32 rule;
	__u8 hook;
	__u8 access;
	__u8 match;
	__u8 has_new_path;
	__u8 needs;		/* RuleFlag bits the deciding rule must carry (exec rules: EXEC or MAP) */
	__u8 tamper;		/* a tamper rule's decision: the event says so (EVENT_TAMPER) */
	__u32 detail;		/* the event's detail (tamper rules) */
	struct super_block *sb;
};

BPF_ARRAY(settings, struct enforcer_settings, ENFORCER_SETTINGS_ENTRIES);
BPF_ARRAY(rules, struct enforcer_rule_config, ENFORCER_RULES_ENTRIES);
BPF_ARRAY(targets, __u32, ENFORCER_TARGETS_ENTRIES);
BPF_LPM_TRIE(exec_places, struct enforcer_lpm_key, struct enforcer_exec_place,
	     ENFORCER_EXEC_PLACES_ENTRIES);
BPF_HASH(exec_fstypes, struct enforcer_fstype_key, __u32, ENFORCER_EXEC_FSTYPES_ENTRIES);
BPF_LPM_TRIE(allow_exe, struct enforcer_lpm_key, __u64, ENFORCER_ALLOW_EXE_ENTRIES);
BPF_HASH(allow_uid, struct enforcer_uid_key, __u64, ENFORCER_ALLOW_UID_ENTRIES);
BPF_LPM_TRIE(allow_cgroup, struct enforcer_lpm_key, __u64, ENFORCER_ALLOW_CGROUP_ENTRIES);
BPF_HASH(place_devs, struct enforcer_dev_key, __u32, ENFORCER_PLACE_DEVS_ENTRIES);
/* enforcer's own maps, programs and links (filled by the agent at load) */
BPF_HASH(protected_objects, struct enforcer_object_key, __u32, ENFORCER_PROTECTED_OBJECTS_ENTRIES);
BPF_PERCPU_ARRAY(stats, __u64, ENFORCER_STATS_ENTRIES);
/* pid_tgid -> dentry of a protected file just opened with O_TRUNC and let
 * through (audit, allowlist). The kernel then calls path_truncate for the
 * same open; that decision was already made and reported once. */
BPF_TABLE("lru_hash", __u64, __u64, truncating_opens, ENFORCER_TRUNCATING_OPENS_ENTRIES);
BPF_PERCPU_ARRAY(scratch_map, struct scratch, ENFORCER_SCRATCH_MAP_ENTRIES);
BPF_RINGBUF_OUTPUT(events, ENFORCER_EVENTS_PAGES);

/* Clang may drop a mask it can prove redundant, after which the verifier can
 * no longer bound the offset; an empty asm makes the value opaque to clang. */
#define OPAQUE(var) asm volatile("" : "+r"(var))

static __always_inline __u32 bounded_offset(__u32 off)
{
	OPAQUE(off);
	return off & STR_MASK;
}

/* Index into path_buf.data for terminators written after a path. */
#define DATA_MASK		(2 * ENFORCER_LPM_DATA_LEN - 1)

static __always_inline __u32 bounded_index(__u32 index)
{
	OPAQUE(index);
	return index & DATA_MASK;
}

/* A load the compiler must really emit: the verifier then sees a value read
 * from map memory, which it does not track, instead of the exact value the
 * previous loop left behind in a register. */
#define FORGET(field) (*(volatile __typeof__(field) *)&(field))

#define READ_KERNEL(dst, src) bpf_probe_read_kernel(&(dst), sizeof(dst), &(src))

static __always_inline void count(__u32 stat)
{
	__u64 *value = stats.lookup(&stat);

	if (value)
		*value += 1;
}

static __always_inline struct enforcer_settings *get_settings(void)
{
	__u32 zero = 0;

	return settings.lookup(&zero);
}

/* Chooses the policy this run decides with: reads `active` exactly once (a
 * reload flips it between two complete policies, see bpf/enforcer.h), keeps
 * the slot and its generation in v, and returns that policy's watch flags.
 * Every later lookup of the run uses v->slot. */
static __always_inline __u32 begin_decision(struct enforcer_settings *cfg, struct verdict_ctx *v)
{
	__u32 slot = FORGET(cfg->active) & 1;

	v->slot = slot;
	v->generation = cfg->generation[slot];
	return cfg->watch[slot];
}

static __always_inline __u32 task_scope(struct enforcer_settings *cfg, __u64 *mntns)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct nsproxy *ns = NULL;
	struct mnt_namespace *mnt_ns = NULL;
	unsigned int inum = 0;

	READ_KERNEL(ns, task->nsproxy);
	if (ns)
		READ_KERNEL(mnt_ns, ns->mnt_ns);
	if (mnt_ns)
		READ_KERNEL(inum, mnt_ns->ns.inum);
	*mntns = inum;
	return inum == cfg->host_mntns ? ENFORCER_SCOPE_HOST : ENFORCER_SCOPE_CONTAINER;
}

/* 1 when the first `want_len` bytes of `name` are `literal`'s. */
static __always_inline int name_matches(const char *name, const char *literal, __u32 want_len)
{
#pragma unroll
	for (int i = 0; i < SHORT_NAME_LEN; i++) {
		if (i >= want_len)
			break;
		if (name[i] != literal[i])
			return 0;
	}
	return 1;
}

/* Reads a dentry's name (at most SHORT_NAME_LEN - 1 bytes) if its length is
 * `want_len`; returns 1 when it equals `literal`. */
static __always_inline int dentry_name_is(struct dentry *dentry, const char *literal,
					  __u32 want_len)
{
	char name[SHORT_NAME_LEN] = {};
	const unsigned char *ptr = NULL;
	__u32 len = 0;

	READ_KERNEL(len, dentry->d_name.len);
	if (len != want_len)
		return 0;
	READ_KERNEL(ptr, dentry->d_name.name);
	if (bpf_probe_read_kernel_str(name, sizeof(name), ptr) < 0)
		return 0;
	return name_matches(name, literal, want_len);
}

/* 1 when the NUL-terminated kernel string at `ptr` is exactly `literal`
 * (`want_len` bytes, at most SHORT_NAME_LEN - 1). */
static __always_inline int kernel_str_is(const char *ptr, const char *literal, __u32 want_len)
{
	char name[SHORT_NAME_LEN] = {};

	if (!ptr || bpf_probe_read_kernel_str(name, sizeof(name), ptr) != want_len + 1)
		return 0;
	return name_matches(name, literal, want_len);
}

static __always_inline struct dentry *parent_of(struct dentry *dentry)
{
	struct dentry *parent = NULL;

	READ_KERNEL(parent, dentry->d_parent);
	return parent;
}

/*
 * Writes "/name" for each non-NULL stack slot, from slot steps-1 down to 0,
 * into out (after its namespace byte). The running length lives in map
 * memory (out->len), not in a register: a register would carry a different
 * value range out of every branch, the verifier could not merge them, and
 * its work would grow exponentially with the number of iterations.
 * `is_kernfs` selects which name field the slots hold.
 */
static __always_inline void append_components(struct scratch *s, struct path_buf *out,
					      __u32 steps, int is_kernfs)
{
	__u8 *buf = out->data + 1;

	FORGET(out->len) = 0;
	for (int j = 0; j < ENFORCER_PATH_WALK_STEPS; j++) {
		const char *name = NULL;
		void *slot;
		__u32 off;
		long copied;

		if (j >= steps)
			break;
		slot = s->stack[(steps - 1 - j) & (ENFORCER_PATH_WALK_STEPS - 1)];
		if (!slot)
			continue;	/* a mount crossing, or a root */
		off = FORGET(out->len);
		if (off >= ENFORCER_LPM_DATA_LEN - 1) {
			out->truncated = 1;
			break;
		}
		buf[bounded_offset(off)] = '/';
		off++;
		out->dir_len = off;
		if (is_kernfs)
			READ_KERNEL(name, ((struct kernfs_node *)slot)->name);
		else
			READ_KERNEL(name, ((struct dentry *)slot)->d_name.name);
		copied = bpf_probe_read_kernel_str(&buf[bounded_offset(off)], ENFORCER_LPM_DATA_LEN, name);
		if (copied > 1)
			off += copied - 1;
		FORGET(out->len) = off;
	}
	if (FORGET(out->len) == 0) {
		buf[0] = '/';
		buf[1] = 0;
		out->len = 1;
		out->dir_len = 1;
	}
}

/*
 * Builds the path of (dentry, vfsmnt) as the current task sees it: walking up
 * to the task's root, crossing mount points. With vfsmnt NULL the walk stays
 * inside the filesystem and stops at its root (rename has no mount).
 * out->data[0] is left for the caller's namespace byte.
 * Returns 1 when the walk reached a root, 0 when it needed more than
 * ENFORCER_PATH_WALK_STEPS steps (then out holds "" and must not be trusted).
 *
 * Verifier cost: the stack is indexed by the step counter itself (a crossing
 * leaves a NULL slot), so every iteration ends in one state, and the results
 * travel to the second loop through map memory, which the verifier does not
 * track: each loop is explored once, not once per way the previous one ended.
 */
static __always_inline int resolve_path(struct scratch *s, struct path_buf *out,
					struct dentry *dentry, struct vfsmount *vfsmnt)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct dentry *root_dentry = NULL;
	struct vfsmount *root_mnt = NULL;
	struct fs_struct *fs = NULL;
	struct mount *mnt = NULL;

	READ_KERNEL(fs, task->fs);
	if (fs) {
		READ_KERNEL(root_dentry, fs->root.dentry);
		READ_KERNEL(root_mnt, fs->root.mnt);
	}
	if (vfsmnt)
		mnt = (struct mount *)((char *)vfsmnt - offsetof(struct mount, mnt));

	s->steps = 0;
	s->reached = 0;
	s->crossed = 0;
	s->top = NULL;
	for (int i = 0; i < ENFORCER_PATH_WALK_STEPS; i++) {
		struct dentry *parent;
		struct dentry *mnt_root = NULL;
		struct mount *up = NULL;

		s->stack[i] = NULL;
		s->steps = i + 1;
		if (!dentry || (dentry == root_dentry && vfsmnt == root_mnt)) {
			s->reached = 1;
			s->top = dentry;
			break;
		}
		if (vfsmnt)
			READ_KERNEL(mnt_root, vfsmnt->mnt_root);
		if (vfsmnt && dentry == mnt_root) {
			READ_KERNEL(up, mnt->mnt_parent);
			if (!up || up == mnt) {
				/* root of the mount namespace (or a detached mount) */
				s->reached = 1;
				s->top = dentry;
				break;
			}
			READ_KERNEL(dentry, mnt->mnt_mountpoint);
			mnt = up;
			vfsmnt = (struct vfsmount *)((char *)up + offsetof(struct mount, mnt));
			s->crossed = 1;
			continue;
		}
		parent = parent_of(dentry);
		if (dentry == parent) {
			/* Without a mount (rename) this is the filesystem's root,
			 * which is not a path component. With one, a dentry that is
			 * its own parent but not the mount's root is a pseudo file
			 * (memfd): its own name is all the path there is. */
			if (vfsmnt)
				s->stack[i] = dentry;
			s->reached = 1;
			s->top = dentry;
			break;
		}
		s->stack[i] = dentry;
		dentry = parent;
	}

	out->len = 0;
	out->dir_len = 0;
	out->truncated = 0;
	out->data[1] = 0;
	if (!FORGET(s->reached)) {
		out->truncated = 1;
		return 0;
	}

	append_components(s, out, FORGET(s->steps), 0);
	return 1;
}

/* Sets the LPM prefix length of a path_buf to cover `extra` more bytes than
 * namespace byte + path, capped at what an LPM key holds. */
static __always_inline void set_prefix(struct path_buf *p, __u32 extra)
{
	__u32 bytes = 1 + p->len + extra;

	if (bytes > ENFORCER_LPM_DATA_LEN)
		bytes = ENFORCER_LPM_DATA_LEN;
	p->prefixlen = bytes * 8;
}

/* Path of the current task's executable into s->exe (empty for kernel threads). */
static __always_inline void resolve_exe(struct scratch *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = NULL;
	struct file *exe = NULL;
	struct dentry *dentry = NULL;
	struct vfsmount *vfsmnt = NULL;

	s->exe.len = 0;
	s->exe.data[1] = 0;
	s->exe.truncated = 0;
	READ_KERNEL(mm, task->mm);
	if (!mm)
		return;
	READ_KERNEL(exe, mm->exe_file);
	if (!exe)
		return;
	READ_KERNEL(dentry, exe->f_path.dentry);
	READ_KERNEL(vfsmnt, exe->f_path.mnt);
	if (!resolve_path(s, &s->exe, dentry, vfsmnt))
		s->exe.truncated = 1;
}

/* cgroup v2 path of the current task into s->cgroup, "/" for the root.
 * Same shape as resolve_path, for the same verifier reasons. */
static __always_inline void resolve_cgroup(struct scratch *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct css_set *cgroups = NULL;
	struct cgroup *cgrp = NULL;
	struct kernfs_node *kn = NULL;

	s->cgroup.len = 0;
	s->cgroup.truncated = 0;
	s->cgroup.data[1] = 0;
	READ_KERNEL(cgroups, task->cgroups);
	if (cgroups)
		READ_KERNEL(cgrp, cgroups->dfl_cgrp);
	if (cgrp)
		READ_KERNEL(kn, cgrp->kn);
	s->steps = 0;
	s->reached = 0;
	for (int i = 0; i < ENFORCER_CGROUP_DEPTH_MAX; i++) {
		struct kernfs_node *parent = NULL;

		s->stack[i] = NULL;
		s->steps = i + 1;
		if (!kn) {
			s->reached = 1;
			break;
		}
		READ_KERNEL(parent, kn->ENFORCER_KERNFS_PARENT);
		if (!parent) {
			s->reached = 1;	/* kn is the root: not part of the path */
			break;
		}
		s->stack[i] = kn;
		kn = parent;
	}
	if (!FORGET(s->reached))
		s->cgroup.truncated = 1;

	append_components(s, &s->cgroup, FORGET(s->steps), 1);
}

static __always_inline __u64 lpm_mask(void *trie_lookup_result)
{
	return trie_lookup_result ? *(__u64 *)trie_lookup_result : 0;
}

/* 1 when an allowlist entry covers rule `rule` for the current task. Needs
 * s->exe and s->cgroup resolved. Appends the terminator each trie expects. */
static __always_inline int allowlisted(struct scratch *s, __u32 rule, __u32 slot)
{
	__u64 bit = ENFORCER_RULE_BIT(rule);
	struct enforcer_uid_key uid = {};
	__u64 *mask;

	uid.uid = (__u32)bpf_get_current_uid_gid();
	uid.slot = slot;
	mask = allow_uid.lookup(&uid);
	if (mask && (*mask & bit))
		return 1;

	if (s->exe.len && !s->exe.truncated) {
		/* exact entries end with NUL, directory entries with '/' */
		s->exe.data[0] = ENFORCER_KEY_NS(slot, 0);
		s->exe.data[bounded_index(1 + s->exe.len)] = 0;
		set_prefix(&s->exe, 1);
		if (lpm_mask(allow_exe.lookup((struct enforcer_lpm_key *)&s->exe)) & bit)
			return 1;
	}
	if (!s->cgroup.truncated) {
		__u32 end = 1 + s->cgroup.len;

		s->cgroup.data[0] = ENFORCER_KEY_NS(slot, 0);
		if (s->cgroup.len > 1) {
			s->cgroup.data[bounded_index(end)] = '/';
			s->cgroup.data[bounded_index(end + 1)] = 0;
			set_prefix(&s->cgroup, 1);
		} else {
			set_prefix(&s->cgroup, 0);	/* root cgroup: "/" */
		}
		mask = allow_cgroup.lookup((struct enforcer_lpm_key *)&s->cgroup);
		s->cgroup.data[bounded_index(end)] = 0;	/* the event reports it without '/' */
		if (lpm_mask(mask) & bit)
			return 1;
	}
	return 0;
}

static __always_inline void copy_str(char *dst, struct path_buf *src)
{
	bpf_probe_read_kernel(dst, ENFORCER_EVENT_STR_LEN, src->data + 1);
	dst[ENFORCER_EVENT_STR_LEN - 1] = 0;
}

/* The start time of a task (ns since boot, the clock /proc/PID/stat's
 * starttime counts in ticks): with the pid it names one process for good. */
static __always_inline __u64 task_start_ns(struct task_struct *task)
{
	__u64 start = 0;

#ifdef ENFORCER_TASK_START
	READ_KERNEL(start, task->ENFORCER_TASK_START);
#endif
	return start;
}

/*
 * Who did it: the acting process's start time and audit login, and the chain
 * of processes above it (real_parent of each thread group leader) up to init
 * or ENFORCER_ANCESTRY_MAX of them. Runs only on the event path, after a rule
 * matched and an event was reserved: the allow path never pays for it. The
 * chain is read here, in the kernel, because by the time the agent reads the
 * event the processes may be gone and their pids reused. Written straight
 * into the reserved record: no stack, no scratch space.
 */
static __always_inline void capture_ancestry(struct enforcer_event *ev, struct task_struct *task)
{
	struct task_struct *leader = NULL;
	struct task_struct *parent = NULL;
	__u32 n = 0;

	ev->loginuid = 0;
	ev->sessionid = 0;
#ifdef ENFORCER_HAS_LOGINUID
	READ_KERNEL(ev->loginuid, task->loginuid.val);
	READ_KERNEL(ev->sessionid, task->sessionid);
	ev->flags |= ENFORCER_EVENT_LOGIN_KNOWN;
#endif
#ifdef ENFORCER_TASK_START
	ev->flags |= ENFORCER_EVENT_START_KNOWN;
#endif
	READ_KERNEL(leader, task->group_leader);
	ev->start_ns = leader ? task_start_ns(leader) : 0;
	for (int i = 0; i < ENFORCER_ANCESTRY_MAX; i++) {
		struct enforcer_ancestor *a = &ev->ancestors[i & (ENFORCER_ANCESTRY_MAX - 1)];

		a->pid = 0;
		a->reserved = 0;
		a->start_ns = 0;
		a->comm[0] = 0;
	}
	for (int i = 0; i < ENFORCER_ANCESTRY_MAX; i++) {
		struct enforcer_ancestor *a;
		__u32 tgid = 0;

		if (!leader)
			break;
		parent = NULL;
		READ_KERNEL(parent, leader->real_parent);
		leader = NULL;
		if (parent)
			READ_KERNEL(leader, parent->group_leader);
		if (leader)
			READ_KERNEL(tgid, leader->tgid);
		if (tgid == 0) {
			leader = NULL;	/* above init (the idle task, pid 0): the chain is complete */
			break;
		}
		a = &ev->ancestors[i & (ENFORCER_ANCESTRY_MAX - 1)];
		a->pid = tgid;
		a->start_ns = task_start_ns(leader);
		bpf_probe_read_kernel_str(a->comm, sizeof(a->comm), leader->comm);
		n = i + 1;
	}
	ev->ancestry_len = n;
	if (leader && n == ENFORCER_ANCESTRY_MAX) {
		/* is there anyone above the last one recorded? */
		__u32 tgid = 0;

		parent = NULL;
		READ_KERNEL(parent, leader->real_parent);
		if (parent)
			READ_KERNEL(tgid, parent->tgid);
		if (tgid != 0)
			ev->flags |= ENFORCER_EVENT_ANCESTRY_TRUNCATED;
	}
}

static __always_inline void emit(struct scratch *s, struct verdict_ctx *v, __u8 action,
				 __u64 mntns, __u32 scope)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = NULL;
	struct enforcer_event *ev;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	ev = events.ringbuf_reserve(sizeof(*ev));
	if (!ev) {
		count(ENFORCER_STAT_EVENTS_LOST);
		return;
	}
	ev->boot_ns = bpf_ktime_get_boot_ns();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->mntns = mntns;
	ev->rule = v->rule;
	ev->generation = v->generation;
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->ppid = 0;
	READ_KERNEL(parent, task->real_parent);
	if (parent)
		READ_KERNEL(ev->ppid, parent->tgid);
	ev->uid = (__u32)uid_gid;
	ev->gid = uid_gid >> 32;
	ev->flags = 0;
	if (scope == ENFORCER_SCOPE_CONTAINER)
		ev->flags |= ENFORCER_EVENT_CONTAINER;
	if (s->obj.truncated)
		ev->flags |= ENFORCER_EVENT_PATH_TRUNCATED;
	if (s->exe.truncated)
		ev->flags |= ENFORCER_EVENT_EXE_TRUNCATED;
	if (s->cgroup.truncated)
		ev->flags |= ENFORCER_EVENT_CGROUP_TRUNCATED;
	if (v->tamper)
		ev->flags |= ENFORCER_EVENT_TAMPER;
	ev->hook = v->hook;
	ev->access = v->access;
	ev->action = action;
	ev->match = v->match;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->fstype[0] = 0;
	if (v->sb) {
		struct file_system_type *type = NULL;
		const char *type_name = NULL;

		READ_KERNEL(type, v->sb->s_type);
		if (type)
			READ_KERNEL(type_name, type->name);
		if (type_name)
			bpf_probe_read_kernel_str(ev->fstype, sizeof(ev->fstype), type_name);
	}
	copy_str(ev->path, &s->obj);
	ev->new_path[0] = 0;
	if (v->has_new_path)
		copy_str(ev->new_path, &s->aux);
	copy_str(ev->exe, &s->exe);
	copy_str(ev->cgroup, &s->cgroup);
	ev->detail = v->detail;
	capture_ancestry(ev, task);
	events.ringbuf_submit(ev, 0);
}

/*
 * A rule matched: consult its allowlists, report, and return the verdict.
 * s->obj (and s->aux for rename) must already hold the object's path.
 */
static __always_inline int apply_rule(struct scratch *s, struct verdict_ctx *v,
				      __u64 mntns, __u32 scope)
{
	struct enforcer_rule_config *rule;
	__u32 index;
	int enforce;

	if (v->rule == 0 || v->rule > ENFORCER_MAX_RULES)
		return 0;
	index = ENFORCER_RULE_INDEX(v->slot & 1, v->rule);
	rule = rules.lookup(&index);
	if (!rule)
		return 0;
	if (v->needs && !(rule->flags & v->needs))
		return 0;	/* e.g. an exec rule with access = ["exec"] and a mapping */
	enforce = rule->flags & ENFORCER_RULE_ENFORCE;

	resolve_exe(s);
	resolve_cgroup(s);
	if (allowlisted(s, v->rule, v->slot & 1)) {
		count(ENFORCER_STAT_ALLOWLISTED);
		return 0;
	}
	if (enforce) {
		count(ENFORCER_STAT_BLOCKED);
		emit(s, v, ENFORCER_ACTION_BLOCKED, mntns, scope);
		return -ENF_EPERM;
	}
	count(ENFORCER_STAT_AUDITED);
	emit(s, v, ENFORCER_ACTION_AUDITED, mntns, scope);
	return 0;
}

static __always_inline __u32 target_rule(__u32 slot, __u32 target, __u32 scope)
{
	__u32 index = ENFORCER_TARGET_INDEX(slot & 1, target, scope);
	__u32 *rule = targets.lookup(&index);

	return rule ? *rule : 0;
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;

	return scratch_map.lookup(&zero);
}

/* A fixed target was hit: find the rule covering it for the current task's
 * scope (into v->rule) and the scratch space to decide it. NULL when no rule
 * applies. */
static __always_inline struct scratch *target_hit(struct enforcer_settings *cfg, __u32 target,
						  struct verdict_ctx *v, __u64 *mntns, __u32 *scope)
{
	*scope = task_scope(cfg, mntns);
	v->rule = target_rule(v->slot, target, *scope);
	if (!v->rule)
		return NULL;
	return get_scratch();
}

/* 1 when `dir` is sys/kernel/ directly under the procfs root `fs_root`. */
static __always_inline int is_proc_sys_kernel(struct dentry *dir, struct dentry *fs_root)
{
	if (!dentry_name_is(dir, NAME_KERNEL, sizeof(NAME_KERNEL) - 1))
		return 0;
	dir = parent_of(dir);
	if (!dentry_name_is(dir, NAME_SYS, sizeof(NAME_SYS) - 1))
		return 0;
	return parent_of(dir) == fs_root;
}

/* Which kernel helper sysctl a file of /proc/sys/kernel/ is, by its name. */
static __always_inline __u32 proc_helper_target(struct dentry *dentry)
{
	if (dentry_name_is(dentry, NAME_CORE_PATTERN, sizeof(NAME_CORE_PATTERN) - 1))
		return ENFORCER_TARGET_HELPER_CORE_PATTERN;
	if (dentry_name_is(dentry, NAME_MODPROBE, sizeof(NAME_MODPROBE) - 1))
		return ENFORCER_TARGET_HELPER_MODPROBE;
	if (dentry_name_is(dentry, NAME_HOTPLUG, sizeof(NAME_HOTPLUG) - 1))
		return ENFORCER_TARGET_HELPER_HOTPLUG;
	return ENFORCER_TARGET_COUNT;
}

/* Which fixed target a write (or read) of this dentry on this superblock is.
 * Returns ENFORCER_TARGET_COUNT for none. The file is recognised by its
 * place inside its filesystem, never by where that filesystem is mounted. */
static __always_inline __u32 classify_file(struct dentry *dentry, struct super_block *sb,
					   unsigned long magic, int write, __u32 watch)
{
	struct dentry *fs_root = NULL;
	struct dentry *parent;

	if (magic == PROC_SUPER_MAGIC) {
		int sysrq = watch & (write ? ENFORCER_WATCH_PROC_WRITE : ENFORCER_WATCH_PROC_READ);
		int helper = write && (watch & ENFORCER_WATCH_HELPER_SYSCTL);
		__u32 target = ENFORCER_TARGET_COUNT;

		if (!sysrq && !helper)
			return ENFORCER_TARGET_COUNT;
		READ_KERNEL(fs_root, sb->s_root);
		parent = parent_of(dentry);
		if (sysrq) {
			if (dentry_name_is(dentry, NAME_SYSRQ_TRIGGER, sizeof(NAME_SYSRQ_TRIGGER) - 1)) {
				if (parent != fs_root)
					return ENFORCER_TARGET_COUNT;
				return write ? ENFORCER_TARGET_SYSRQ_TRIGGER_WRITE
					     : ENFORCER_TARGET_SYSRQ_TRIGGER_READ;
			}
			if (dentry_name_is(dentry, NAME_SYSRQ, sizeof(NAME_SYSRQ) - 1))
				target = write ? ENFORCER_TARGET_SYSRQ_SYSCTL_WRITE
					       : ENFORCER_TARGET_SYSRQ_SYSCTL_READ;
		}
		if (target == ENFORCER_TARGET_COUNT && helper)
			target = proc_helper_target(dentry);
		if (target == ENFORCER_TARGET_COUNT || !is_proc_sys_kernel(parent, fs_root))
			return ENFORCER_TARGET_COUNT;
		return target;
	}
	if (magic == CGROUP_SUPER_MAGIC) {
		/* cgroup v1 only: cgroup2 has its own magic and no release_agent */
		if (!write || !(watch & ENFORCER_WATCH_CGROUP_WRITE))
			return ENFORCER_TARGET_COUNT;
		if (!dentry_name_is(dentry, NAME_RELEASE_AGENT, sizeof(NAME_RELEASE_AGENT) - 1))
			return ENFORCER_TARGET_COUNT;
		return ENFORCER_TARGET_RELEASE_AGENT_WRITE;
	}
	if (magic == SYSFS_MAGIC) {
		/* kernel/uevent_helper under the root of any sysfs mount */
		if (!write || !(watch & ENFORCER_WATCH_HELPER_SYSFS))
			return ENFORCER_TARGET_COUNT;
		if (!dentry_name_is(dentry, NAME_UEVENT_HELPER, sizeof(NAME_UEVENT_HELPER) - 1))
			return ENFORCER_TARGET_COUNT;
		READ_KERNEL(fs_root, sb->s_root);
		parent = parent_of(dentry);
		if (!dentry_name_is(parent, NAME_KERNEL, sizeof(NAME_KERNEL) - 1) ||
		    parent_of(parent) != fs_root)
			return ENFORCER_TARGET_COUNT;
		return ENFORCER_TARGET_HELPER_UEVENT_HELPER;
	}
	if (magic == BINFMTFS_MAGIC) {
		/* register and status at the root of any binfmt_misc mount; the
		 * entries beside them only enable, disable or remove themselves */
		if (!write || !(watch & ENFORCER_WATCH_HELPER_BINFMT))
			return ENFORCER_TARGET_COUNT;
		READ_KERNEL(fs_root, sb->s_root);
		if (parent_of(dentry) != fs_root)
			return ENFORCER_TARGET_COUNT;
		if (dentry_name_is(dentry, NAME_REGISTER, sizeof(NAME_REGISTER) - 1))
			return ENFORCER_TARGET_HELPER_BINFMT_REGISTER;
		if (dentry_name_is(dentry, NAME_STATUS, sizeof(NAME_STATUS) - 1))
			return ENFORCER_TARGET_HELPER_BINFMT_STATUS;
		return ENFORCER_TARGET_COUNT;
	}
	return ENFORCER_TARGET_COUNT;
}

static __always_inline __u8 target_access(__u32 target)
{
	switch (target) {
	case ENFORCER_TARGET_SYSRQ_TRIGGER_READ:
	case ENFORCER_TARGET_SYSRQ_SYSCTL_READ:
		return ENFORCER_ACCESS_READ;
	default:
		return ENFORCER_ACCESS_WRITE;
	}
}

/* 1 when `dentry` is the directory whose inode number is `ino`, or lies in
 * it, two levels down at most (a pin in an instance directory; a file in the
 * policy directory's allow.d). A new entry's dentry has no inode yet: its
 * parent decides. */
static __always_inline int is_entry_of(struct dentry *dentry, __u64 ino)
{
#pragma unroll
	for (int level = 0; level < 3; level++) {
		struct inode *inode = NULL;
		unsigned long found = 0;

		if (!dentry)
			return 0;
		READ_KERNEL(inode, dentry->d_inode);
		if (inode)
			READ_KERNEL(found, inode->i_ino);
		if (inode && found == ino)
			return 1;
		dentry = parent_of(dentry);
	}
	return 0;
}

/* 1 when `dentry` is a directory above the policy directory on its
 * filesystem: renaming it away (or exchanging it with another), then making
 * a new one in its place, would put other files at the policy's path for the
 * agent's next reload or start. */
static __always_inline int is_policy_ancestor(struct enforcer_settings *cfg, struct dentry *dentry)
{
	struct inode *inode = NULL;
	unsigned long ino = 0;

	if (!dentry)
		return 0;
	READ_KERNEL(inode, dentry->d_inode);
	if (!inode)
		return 0;	/* a new name: nothing is moved away */
	READ_KERNEL(ino, inode->i_ino);
#pragma unroll
	for (int i = 0; i < ENFORCER_POLICY_ANCESTORS; i++) {
		if (cfg->policy_ancestors[i] && cfg->policy_ancestors[i] == ino)
			return 1;
	}
	return 0;
}

/* 1 when `dentry` hangs from no directory the kernel knows: a file opened by
 * handle (open_by_handle_at) after its names left the dentry cache (echo 2 >
 * /proc/sys/vm/drop_caches) comes with a disconnected dentry, its own parent.
 * Which directory it lies in cannot be told from it. The file system's root
 * is its own parent too, and is not one. */
static __always_inline int is_disconnected(struct dentry *dentry, struct super_block *sb)
{
	struct dentry *root = NULL;

	if (!dentry || parent_of(dentry) != dentry)
		return 0;
	READ_KERNEL(root, sb->s_root);
	return dentry != root;
}

/* 1 when `sb` is the bpffs that holds enforcer's pins: by its magic and
 * s_dev, whatever a mount of it is called. */
static __always_inline int is_pins_fs(struct enforcer_settings *cfg, struct super_block *sb)
{
	unsigned long magic = 0;
	__u32 dev = 0;

	if (!sb || !cfg->pins_ino)
		return 0;
	READ_KERNEL(magic, sb->s_magic);
	if (magic != BPF_FS_MAGIC)
		return 0;
	READ_KERNEL(dev, sb->s_dev);
	return dev == cfg->pins_dev;
}

/* --- tamper: enforcer's own objects and process (kind "tamper") ------------
 *
 * Who is judged: only tasks whose scope has a tamper rule; on the host, not
 * root (current_is_host_root). Never the running agent itself. Each hook
 * leaves after one or two loads unless the object is enforcer's.
 */

/* The settings, if any rule of the policy in force needs `watch`; v gets
 * that policy's slot (begin_decision). NULL: nothing to decide. */
static __always_inline struct enforcer_settings *settings_watching(__u32 watch, struct verdict_ctx *v)
{
	struct enforcer_settings *cfg = get_settings();

	if (!cfg || !(begin_decision(cfg, v) & watch))
		return NULL;
	return cfg;
}

/* 1 when `task`'s thread group is the running agent: its tgid, and its start
 * time in clock ticks, so that a process that got the pid of an agent gone
 * is not taken for it. */
static __always_inline int task_is_agent(struct enforcer_settings *cfg, struct task_struct *task)
{
	struct task_struct *leader = NULL;
	__u32 tgid = 0;

	READ_KERNEL(tgid, task->tgid);
	if (!cfg->agent_tgid || tgid != cfg->agent_tgid)
		return 0;
#ifdef ENFORCER_TASK_START
	READ_KERNEL(leader, task->group_leader);
	if (!leader || !cfg->tick_ns)
		return 0;
	return task_start_ns(leader) / cfg->tick_ns == cfg->agent_start_ticks;
#else
	return 1;	/* no start time in this kernel: the pid alone (docs/threat-model.md) */
#endif
}

static __always_inline int current_is_agent(struct enforcer_settings *cfg)
{
	return task_is_agent(cfg, (struct task_struct *)bpf_get_current_task());
}

/* Host root: effective uid 0 (the kernel's, so root of a user namespace of
 * its own is not) in the host's mount namespace, which the caller checked.
 * It administers enforcer (enforcer unload, systemctl, the package scripts)
 * and is out of the tamper rules' reach (docs/threat-model.md); a host
 * service with capabilities that is not root is judged. */
static __always_inline int current_is_host_root(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const struct cred *cred = NULL;
	kuid_t euid = {};

	READ_KERNEL(cred, task->cred);
	if (!cred)
		return 0;
	READ_KERNEL(euid, cred->euid);
	return euid.val == 0;
}

/* The tamper rule covering `target` for the acting task, unless it is the
 * agent; v->rule is set. NULL: nothing to decide. */
static __always_inline struct scratch *tamper_hit(struct enforcer_settings *cfg, __u32 target,
						  struct verdict_ctx *v, __u64 *mntns, __u32 *scope)
{
	struct scratch *s;

	if (current_is_agent(cfg))
		return NULL;
	v->tamper = 1;
	s = target_hit(cfg, target, v, mntns, scope);
	if (s && *scope == ENFORCER_SCOPE_HOST && current_is_host_root())
		return NULL;
	return s;
}

/* --- files: the fixed targets on procfs, cgroup v1, sysfs and binfmt_misc,
 * and the policy directory wherever its filesystem is mounted ------------- */

/* path_truncate for the O_TRUNC of an open that file_open already decided
 * on: not decided (nor reported) twice. */
static __always_inline int truncate_decided_at_open(struct dentry *dentry)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 *marker = truncating_opens.lookup(&pid_tgid);

	if (!marker || *marker != (__u64)dentry)
		return 0;
	truncating_opens.delete(&pid_tgid);
	return 1;
}

/* The decision on an open or truncation once its rule is known. */
static __always_inline int decide_file(struct scratch *s, struct verdict_ctx *v, struct dentry *dentry,
				       struct vfsmount *vfsmnt, __u64 mntns, __u32 scope, int truncating)
{
	int verdict;

	resolve_path(s, &s->obj, dentry, vfsmnt);
	verdict = apply_rule(s, v, mntns, scope);
	if (verdict == 0 && truncating) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		__u64 marker = (__u64)dentry;

		truncating_opens.update(&pid_tgid, &marker);
	}
	return verdict;
}

/* procfs, cgroup v1, sysfs and binfmt_misc files; shared by file_open and
 * path_truncate. */
static __always_inline int check_file(struct dentry *dentry, struct vfsmount *vfsmnt,
				      struct super_block *sb, unsigned long magic, int write,
				      int truncating, __u8 hook)
{
	struct enforcer_settings *cfg;
	struct scratch *s;
	struct verdict_ctx v = {};
	__u64 mntns = 0;
	__u32 target, scope;

	if (magic != PROC_SUPER_MAGIC && magic != CGROUP_SUPER_MAGIC && magic != SYSFS_MAGIC &&
	    magic != BINFMTFS_MAGIC)
		return 0;
	cfg = get_settings();
	if (!cfg)
		return 0;
	target = classify_file(dentry, sb, magic, write, begin_decision(cfg, &v));
	if (target >= ENFORCER_TARGET_COUNT)
		return 0;
	if (hook == ENFORCER_HOOK_PATH_TRUNCATE && truncate_decided_at_open(dentry))
		return 0;
	s = target_hit(cfg, target, &v, &mntns, &scope);
	if (!s)
		return 0;
	v.hook = hook;
	v.access = target_access(target);
	v.sb = sb;
	return decide_file(s, &v, dentry, vfsmnt, mntns, scope, truncating);
}

/* A change to a file in the policy directory (a write, a truncation, its
 * mode or owner), through whatever mount of its filesystem: recognised by
 * that filesystem's s_dev and the directory's inode, not by a path a
 * container may see differently. Its own path through the verifier: merged
 * into check_file's decision, 6.12's verifier gave up on file_open (over
 * 1,000,000 instructions; 70,000 without it). `cfg` (not NULL) and `v`: the
 * caller's settings_watching(ENFORCER_WATCH_TAMPER_POLICY). A NULL vfsmount:
 * the event's path is the one inside the filesystem. */
static __always_inline int check_policy_change(struct enforcer_settings *cfg, struct verdict_ctx *v,
					       struct dentry *dentry, struct vfsmount *vfsmnt,
					       struct super_block *sb, __u8 access, int truncating,
					       __u8 hook)
{
	struct scratch *s;
	__u64 mntns = 0;
	__u32 dev = 0, scope;

	if (!cfg->policy_ino)
		return 0;
	READ_KERNEL(dev, sb->s_dev);
	if (dev != cfg->policy_dev)
		return 0;
	/* a directory above it made writable by others is one more reason for
	 * the agent to refuse its policy (enforcer/fileperms.py checks them
	 * all); a mount over one would put other files at the policy's path.
	 * A file reached by handle whose directory the kernel no longer knows
	 * may be one of the policy's: on its file system, it counts as one. */
	if (!is_entry_of(dentry, cfg->policy_ino) && !is_disconnected(dentry, sb) &&
	    !(hook != ENFORCER_HOOK_FILE_OPEN && is_policy_ancestor(cfg, dentry)))
		return 0;
	if (hook == ENFORCER_HOOK_INODE_SETATTR && truncate_decided_at_open(dentry))
		return 0;
	s = tamper_hit(cfg, ENFORCER_TARGET_TAMPER_POLICY, v, &mntns, &scope);
	if (!s)
		return 0;
	v->hook = hook;
	v->access = access;
	v->sb = sb;
	return decide_file(s, v, dentry, vfsmnt, mntns, scope, truncating);
}

/* The file's own name, on the file system of its inode. A file opened
 * through another file system's path has an f_path that is not its inode's:
 * an overlay opens the real file of its upper layer with the overlay's path
 * (open_with_fake_path, backing_file_open), so judging that path would judge
 * the overlay's directories, whose inode numbers are not the real ones. Then
 * one of the real inode's own names stands in (a regular file has one unless
 * hard-linked; making a hard link in or to the policy directory is refused). */
static __always_inline struct dentry *name_on_inode_fs(struct file *file, struct super_block *sb,
							struct vfsmount **vfsmnt)
{
	struct dentry *dentry = NULL;
	struct super_block *dentry_sb = NULL;
	struct inode *inode = NULL;
	struct hlist_node *alias = NULL;

	READ_KERNEL(dentry, file->f_path.dentry);
	READ_KERNEL(*vfsmnt, file->f_path.mnt);
	if (dentry)
		READ_KERNEL(dentry_sb, dentry->d_sb);
	if (dentry_sb == sb)
		return dentry;
	*vfsmnt = NULL;	/* the path inside the real file system */
	READ_KERNEL(inode, file->f_inode);
	if (inode)
		READ_KERNEL(alias, inode->i_dentry.first);
	if (!alias)
		return NULL;
	return (struct dentry *)((char *)alias - __builtin_offsetof(struct dentry, d_u.d_alias));
}

LSM_PROBE(file_open, struct file *file, int ret)
{
	struct dentry *dentry = NULL;
	struct vfsmount *vfsmnt = NULL;
	struct super_block *sb;
	unsigned long magic;
	unsigned int f_mode, f_flags;
	int write;

	if (ret)
		return ret;
	/* The hot path: every open() on the host. Five plain loads through
	 * the BTF-typed argument (no helper call; a NULL along the way reads
	 * as 0) and out, for a read of anything that is not procfs, cgroup v1,
	 * sysfs or binfmt_misc. Writes elsewhere go on to the settings, and
	 * further only when a tamper rule protects the policy directory (is
	 * it that directory's filesystem?); opens of those four are cut
	 * short by the watch flags. O_TRUNC truncates even with O_RDONLY (the
	 * kernel asks for write permission in that case): it counts as a write. */
	sb = file->f_inode->i_sb;
	magic = sb->s_magic;
	f_mode = file->f_mode;
	f_flags = file->f_flags;
	write = (f_mode & ENF_FMODE_WRITE) || (f_flags & ENF_O_TRUNC);
	if (magic != PROC_SUPER_MAGIC && magic != CGROUP_SUPER_MAGIC && magic != SYSFS_MAGIC &&
	    magic != BINFMTFS_MAGIC) {
		struct verdict_ctx v = {};
		struct enforcer_settings *cfg;

		if (!write)
			return 0;
		cfg = settings_watching(ENFORCER_WATCH_TAMPER_POLICY, &v);
		if (!cfg)
			return 0;	/* no rule protects the policy: no more reads */
		dentry = name_on_inode_fs(file, sb, &vfsmnt);
		if (!dentry)
			return 0;
		return check_policy_change(cfg, &v, dentry, vfsmnt, sb, ENFORCER_ACCESS_WRITE,
					   (f_flags & ENF_O_TRUNC) != 0, ENFORCER_HOOK_FILE_OPEN);
	}
	READ_KERNEL(dentry, file->f_path.dentry);
	READ_KERNEL(vfsmnt, file->f_path.mnt);
	return check_file(dentry, vfsmnt, sb, magic, write, (f_flags & ENF_O_TRUNC) != 0,
			  ENFORCER_HOOK_FILE_OPEN);
}

LSM_PROBE(path_truncate, const struct path *path, int ret)
{
	unsigned long magic = 0;
	struct dentry *dentry = NULL;
	struct vfsmount *vfsmnt = NULL;
	struct inode *inode = NULL;
	struct super_block *sb = NULL;

	if (ret)
		return ret;
	READ_KERNEL(dentry, path->dentry);
	READ_KERNEL(vfsmnt, path->mnt);
	if (!dentry)
		return 0;
	READ_KERNEL(inode, dentry->d_inode);
	if (!inode)
		return 0;
	READ_KERNEL(sb, inode->i_sb);
	if (!sb)
		return 0;
	READ_KERNEL(magic, sb->s_magic);
	return check_file(dentry, vfsmnt, sb, magic, 1, 0, ENFORCER_HOOK_PATH_TRUNCATE);
}

/* A file's size, mode or owner set: truncate(2), ftruncate(2), an O_TRUNC
 * open, chmod, chown; also what an overlay does to its upper layer's file on
 * the writer's behalf, which path_truncate sees only by the overlay's path.
 * The policy directory's files only: a policy file made writable by others
 * (or owned by someone else) is one the agent refuses at its next start
 * (enforcer/fileperms.py), and the truncation of one empties it. Times alone
 * (utimes, touch -c) are let through, unjudged. */
#ifdef ENFORCER_HOOK_WITH_HEAD_INODE_SETATTR
#define ENFORCER_HOOK_HEAD_INODE_SETATTR struct mnt_idmap *idmap,	/* Linux 6.3+ */
#else
#define ENFORCER_HOOK_HEAD_INODE_SETATTR
#endif
LSM_PROBE(inode_setattr, ENFORCER_HOOK_HEAD_INODE_SETATTR struct dentry *dentry, struct iattr *attr, int ret)
{
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};
	struct super_block *sb = NULL;
	unsigned int valid = 0;

	if (ret)
		return ret;
	READ_KERNEL(valid, attr->ia_valid);
	if (!(valid & (ENF_ATTR_MODE | ENF_ATTR_UID | ENF_ATTR_GID | ENF_ATTR_SIZE)))
		return 0;
	READ_KERNEL(sb, dentry->d_sb);
	if (!sb)
		return 0;
	cfg = settings_watching(ENFORCER_WATCH_TAMPER_POLICY, &v);
	if (!cfg)	/* a branch, not a select: clang's select masks the pointer, which the verifier refuses */
		return 0;
	return check_policy_change(cfg, &v, dentry, NULL, sb,
				   (valid & ENF_ATTR_SIZE) ? ENFORCER_ACCESS_WRITE : ENFORCER_ACCESS_ATTRIBUTES, 0,
				   ENFORCER_HOOK_INODE_SETATTR);
}

/* Writes a kernel string (an object's name) as the event's path. */
static __always_inline void name_as_path(struct scratch *s, const char *name)
{
	s->obj.data[1] = 0;
	if (name)
		bpf_probe_read_kernel_str(&s->obj.data[1], ENFORCER_COMM_LEN, name);
	s->obj.truncated = 0;
}

/* An fd of a BPF object is about to be made: by id, by pin, or at creation. */
static __always_inline int judge_bpf_object(__u32 kind, __u32 id, const char *name, __u32 hook)
{
	struct enforcer_object_key key = {.kind = kind, .id = id};
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};
	struct scratch *s;
	__u64 mntns = 0;
	__u32 scope;

	cfg = settings_watching(ENFORCER_WATCH_TAMPER_BPF, &v);
	if (!cfg)
		return 0;
	if (!protected_objects.lookup(&key))
		return 0;
	s = tamper_hit(cfg, ENFORCER_TARGET_TAMPER_BPF_OBJECT, &v, &mntns, &scope);
	if (!s)
		return 0;
	v.hook = hook;
	v.access = ENFORCER_ACCESS_OBTAIN;
	v.detail = id;
	name_as_path(s, name);
	return apply_rule(s, &v, mntns, scope);
}

LSM_PROBE(bpf_map, struct bpf_map *map, fmode_t fmode, int ret)
{
	if (ret)
		return ret;
	return judge_bpf_object(ENFORCER_OBJECT_MAP, map->id, map->name, ENFORCER_HOOK_BPF_MAP);
}

LSM_PROBE(bpf_prog, struct bpf_prog *prog, int ret)
{
	struct bpf_prog_aux *aux;

	if (ret)
		return ret;
	aux = prog->aux;
	if (!aux)
		return 0;
	return judge_bpf_object(ENFORCER_OBJECT_PROG, aux->id, aux->name, ENFORCER_HOOK_BPF_PROG);
}

/* A link fd has no hook of its own (bpf_link_new_fd): BPF_LINK_GET_FD_BY_ID
 * is judged on the command, whose attr is the kernel's copy. A link pin
 * opened with BPF_OBJ_GET is not (docs/threat-model.md): an LSM link fd
 * cannot detach or replace the program (no .detach, no .update_prog). */
#ifdef ENFORCER_HOOK_WITH_TAIL_BPF
#define ENFORCER_HOOK_TAIL_BPF , bool kernel	/* Linux 6.14+ */
#else
#define ENFORCER_HOOK_TAIL_BPF
#endif
LSM_PROBE(bpf, int cmd, union bpf_attr *attr, unsigned int size ENFORCER_HOOK_TAIL_BPF, int ret)
{
	if (ret)
		return ret;
	if (cmd != BPF_LINK_GET_FD_BY_ID)
		return 0;
	return judge_bpf_object(ENFORCER_OBJECT_LINK, attr->link_id, NULL, ENFORCER_HOOK_BPF);
}


/* Removing or renaming enforcer's pins (the last pin of a link that no
 * process holds is what keeps a program attached), or making anything new in
 * the pin directory: an instance planted there (a directory of the attacker's
 * own programs and maps, or a symlink to one) is what a restarted agent would
 * adopt, and the attacker would hold fds of its maps. The same changes in the
 * policy directory, whose files the agent loads at its next reload. */
static __always_inline int judge_entry_change(struct inode *dir, struct dentry *dentry,
					      struct dentry *other, __u32 hook)
{
	struct enforcer_settings *cfg;
	struct super_block *sb = NULL;
	struct verdict_ctx v = {};
	struct scratch *s;
	unsigned long magic = 0;
	__u32 dev = 0, watch, target, scope;
	__u64 mntns = 0, ino;

	READ_KERNEL(sb, dir->i_sb);
	if (!sb)
		return 0;
	READ_KERNEL(magic, sb->s_magic);
	if (magic == BPF_FS_MAGIC) {
		watch = ENFORCER_WATCH_TAMPER_PINS;
		target = ENFORCER_TARGET_TAMPER_PIN;
	} else {
		watch = ENFORCER_WATCH_TAMPER_POLICY;
		target = ENFORCER_TARGET_TAMPER_POLICY;
	}
	cfg = settings_watching(watch, &v);
	if (!cfg)
		return 0;
	if (target == ENFORCER_TARGET_TAMPER_PIN) {
		if (!is_pins_fs(cfg, sb))
			return 0;
		ino = cfg->pins_ino;
	} else {
		ino = cfg->policy_ino;
		READ_KERNEL(dev, sb->s_dev);
		if (!ino || dev != cfg->policy_dev)
			return 0;
	}
	/* a hard link to a file opened by handle, whose directory is unknown
	 * (check_policy_change), would be a new name for a policy file */
	if (!is_entry_of(dentry, ino) && !(other && is_entry_of(other, ino)) &&
	    !(hook == ENFORCER_HOOK_INODE_RENAME && target == ENFORCER_TARGET_TAMPER_POLICY &&
	      (is_policy_ancestor(cfg, dentry) || is_policy_ancestor(cfg, other))) &&
	    !(hook == ENFORCER_HOOK_INODE_LINK && target == ENFORCER_TARGET_TAMPER_POLICY && is_disconnected(other, sb)))
		return 0;
	s = tamper_hit(cfg, target, &v, &mntns, &scope);
	if (!s)
		return 0;
	v.hook = hook;
	v.sb = sb;
	if (hook == ENFORCER_HOOK_INODE_RENAME)
		v.access = ENFORCER_ACCESS_RENAME;
	else if (hook == ENFORCER_HOOK_INODE_UNLINK || hook == ENFORCER_HOOK_INODE_RMDIR)
		v.access = ENFORCER_ACCESS_REMOVE;
	else
		v.access = ENFORCER_ACCESS_CREATE;
	/* no vfsmount here: the path is relative to the filesystem's root */
	resolve_path(s, &s->obj, dentry, NULL);
	if (other) {
		v.has_new_path = 1;
		resolve_path(s, &s->aux, other, NULL);
	}
	return apply_rule(s, &v, mntns, scope);
}

LSM_PROBE(inode_unlink, struct inode *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, dentry, NULL, ENFORCER_HOOK_INODE_UNLINK);
}

LSM_PROBE(inode_rmdir, struct inode *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, dentry, NULL, ENFORCER_HOOK_INODE_RMDIR);
}

/* Making an entry: `dentry` is the new name (negative yet), in `dir`.
 * BPF_OBJ_PIN comes here through vfs_mkobj(). Every file creation in the
 * system runs these; they leave at the superblock's magic unless on bpffs. */
LSM_PROBE(inode_create, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, dentry, NULL, ENFORCER_HOOK_INODE_CREATE);
}

LSM_PROBE(inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, dentry, NULL, ENFORCER_HOOK_INODE_MKDIR);
}

LSM_PROBE(inode_symlink, struct inode *dir, struct dentry *dentry, const char *old_name, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, dentry, NULL, ENFORCER_HOOK_INODE_SYMLINK);
}

/* The new name is judged, and the linked file: another name for a policy
 * file, outside the policy directory, would be a way to write it. */
LSM_PROBE(inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, new_dentry, old_dentry, ENFORCER_HOOK_INODE_LINK);
}

/* A fifo, a device node or a socket where a policy file would be: allow.d
 * reads *.toml files, and refuses anything that is not a regular file, which
 * would keep every later reload and start from happening. */
LSM_PROBE(inode_mknod, struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev, int ret)
{
	if (ret)
		return ret;
	return judge_entry_change(dir, dentry, NULL, ENFORCER_HOOK_INODE_MKNOD);
}

/* Unmounting the bpffs that holds enforcer's pins, putting a mount over it
 * (or in it), moving it away, or changing its superblock's options. A
 * container's own mount is its own business, but with shared propagation
 * (`-v /sys/fs/bpf:/sys/fs/bpf:rshared`) an unmount or a mount on top
 * reaches the host's: an unmount frees the pins with the last mount (an
 * adopting agent holds no link fd, so its programs detach at once), a mount
 * on top hides them from the next agent, which would look for its instance
 * in the attacker's file system. The superblock is one for every mount of
 * it: a read-only remount through any of them keeps the next agent from
 * pinning. `cfg` (not NULL) and `v`: the caller's
 * settings_watching(ENFORCER_WATCH_TAMPER_PINS); a NULL vfsmnt: the event's
 * path is the one inside the bpffs. */
static __always_inline int judge_pins_mount(struct enforcer_settings *cfg, struct verdict_ctx *v,
					    struct super_block *sb, struct dentry *dentry,
					    struct vfsmount *vfsmnt, __u8 access, __u32 hook)
{
	struct scratch *s;
	__u64 mntns = 0;
	__u32 scope;

	if (!is_pins_fs(cfg, sb))
		return 0;
	s = tamper_hit(cfg, ENFORCER_TARGET_TAMPER_PIN, v, &mntns, &scope);
	if (!s)
		return 0;
	v->hook = hook;
	v->access = access;
	v->sb = sb;
	resolve_path(s, &s->obj, dentry, vfsmnt);
	return apply_rule(s, v, mntns, scope);
}

/* How many mounts directly beneath an unmounted one are looked at (sysfs
 * at /sys has about ten: cgroup, securityfs, debugfs, bpf...). */
#define UMOUNT_CHILDREN_MAX 32

/* The bpffs mounted directly beneath `mnt` that holds the pins, if any:
 * `umount -l /sys` takes it along. NULL: none (or not among the first
 * UMOUNT_CHILDREN_MAX). */
static __always_inline struct super_block *pins_fs_beneath(struct enforcer_settings *cfg, struct vfsmount *mnt)
{
	struct mount *parent = (struct mount *)((char *)mnt - offsetof(struct mount, mnt));
	struct list_head *head = &parent->mnt_mounts;
	struct list_head *next = NULL;

	READ_KERNEL(next, head->next);
	for (int i = 0; i < UMOUNT_CHILDREN_MAX && next && next != head; i++) {
		struct mount *child = (struct mount *)((char *)next - offsetof(struct mount, mnt_child));
		struct super_block *sb = NULL;

		READ_KERNEL(sb, child->mnt.mnt_sb);
		if (is_pins_fs(cfg, sb))
			return sb;
		READ_KERNEL(next, child->mnt_child.next);
	}
	return NULL;
}

/* The mount itself, or (umount -l of the mount above it) one beneath. One
 * settings lookup per umount(2), which is rare. */
LSM_PROBE(sb_umount, struct vfsmount *mnt, int flags, int ret)
{
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};
	struct super_block *sb = NULL;
	struct dentry *root = NULL;

	if (ret)
		return ret;
	cfg = settings_watching(ENFORCER_WATCH_TAMPER_PINS, &v);
	if (!cfg || !cfg->pins_ino)
		return 0;	/* no tamper rule: no walk */
	READ_KERNEL(sb, mnt->mnt_sb);
	READ_KERNEL(root, mnt->mnt_root);
	if (!is_pins_fs(cfg, sb))
		sb = pins_fs_beneath(cfg, mnt);
	return judge_pins_mount(cfg, &v, sb, root, mnt, ENFORCER_ACCESS_UNMOUNT, ENFORCER_HOOK_SB_UMOUNT);
}

/* A mount put on `path`. */
static __always_inline int judge_mount_onto(const struct path *path, __u32 hook)
{
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};
	unsigned long magic = 0;
	struct dentry *dentry = NULL;
	struct vfsmount *vfsmnt = NULL;
	struct super_block *sb = NULL;

	READ_KERNEL(dentry, path->dentry);
	READ_KERNEL(vfsmnt, path->mnt);
	if (!dentry)
		return 0;
	READ_KERNEL(sb, dentry->d_sb);
	if (!sb)
		return 0;
	READ_KERNEL(magic, sb->s_magic);
	if (magic != BPF_FS_MAGIC) {	/* over the policy directory, in it, or over a directory above it */
		cfg = settings_watching(ENFORCER_WATCH_TAMPER_POLICY, &v);
		if (!cfg)
			return 0;
		return check_policy_change(cfg, &v, dentry, vfsmnt, sb, ENFORCER_ACCESS_MOUNT, 0, hook);
	}
	cfg = settings_watching(ENFORCER_WATCH_TAMPER_PINS, &v);
	if (!cfg)
		return 0;
	return judge_pins_mount(cfg, &v, sb, dentry, vfsmnt, ENFORCER_ACCESS_MOUNT, hook);
}

/* `path` is where the mount goes (for a remount or a propagation change,
 * the mount itself). A propagation change and a bind's remount (its read-only
 * flag) concern that one mount: container runtimes make both on the
 * /sys/fs/bpf they bind into a container, and neither puts anything over the
 * pins. A remount of the superblock is judged in sb_remount, which the new
 * mount API's reconfigure reaches too. The flags are read in the order the
 * kernel acts on them (path_mount): remount and bind come before a
 * propagation bit, so MS_BIND|MS_SHARED is a bind, judged. A move
 * (MS_MOVE) is judged on where it goes: the mount moved is named by a string
 * here, which the kernel resolves later (see the threat model). */
LSM_PROBE(sb_mount, const char *dev_name, const struct path *path, const char *type, unsigned long flags,
	  void *data, int ret)
{
	if (ret)
		return ret;
	if (flags & ENF_MS_REMOUNT)
		return 0;	/* a bind's own flags, or the superblock's (sb_remount) */
	if (!(flags & ENF_MS_BIND) && (flags & ENF_MS_PROPAGATION))
		return 0;	/* a propagation change */
	return judge_mount_onto(path, ENFORCER_HOOK_SB_MOUNT);
}

/* A superblock's options changed (reconfigure_super): `mount -o remount`
 * and the new mount API's fspick(2) + fsconfig(FSCONFIG_CMD_RECONFIGURE)
 * both come here. The pins' bpffs only. */
LSM_PROBE(sb_remount, struct super_block *sb, void *mnt_opts, int ret)
{
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};
	struct dentry *root = NULL;

	if (ret)
		return ret;
	cfg = settings_watching(ENFORCER_WATCH_TAMPER_PINS, &v);
	if (!cfg || !is_pins_fs(cfg, sb))
		return 0;
	READ_KERNEL(root, sb->s_root);
	return judge_pins_mount(cfg, &v, sb, root, NULL, ENFORCER_ACCESS_MOUNT, ENFORCER_HOOK_SB_REMOUNT);
}

/* The new mount API's way to put a mount (fsmount, open_tree) on a path,
 * or to move one that is mounted somewhere. A mount of the pins' bpffs, or
 * the mount directly above one (/sys), that has a parent is moved away from
 * where the next agent looks for it (sb_umount looks as far down); one that
 * has none is a detached clone (open_tree(OPEN_TREE_CLONE), what a runtime
 * binding /sys/fs/bpf into a container may use): attaching it takes
 * nothing away. The hook does not see MOVE_MOUNT_SET_GROUP (a peer group
 * copied, nothing moved): that one is judged as a move too. */
LSM_PROBE(move_mount, const struct path *from_path, const struct path *to_path, int ret)
{
	struct vfsmount *from = NULL;

	if (ret)
		return ret;
	READ_KERNEL(from, from_path->mnt);
	if (from) {
		struct mount *mnt = (struct mount *)((char *)from - offsetof(struct mount, mnt));
		struct mount *parent = NULL;

		READ_KERNEL(parent, mnt->mnt_parent);
		if (parent && parent != mnt) {
			struct enforcer_settings *cfg;
			struct verdict_ctx v = {};
			struct super_block *sb = NULL;
			struct dentry *root = NULL;
			int verdict;

			cfg = settings_watching(ENFORCER_WATCH_TAMPER_PINS, &v);
			if (cfg && cfg->pins_ino) {
				READ_KERNEL(sb, from->mnt_sb);
				READ_KERNEL(root, from->mnt_root);
				if (!is_pins_fs(cfg, sb))
					sb = pins_fs_beneath(cfg, from);
				verdict = judge_pins_mount(cfg, &v, sb, root, from, ENFORCER_ACCESS_UNMOUNT,
							   ENFORCER_HOOK_MOVE_MOUNT);
				if (verdict)
					return verdict;
			}
		}
	}
	return judge_mount_onto(to_path, ENFORCER_HOOK_MOVE_MOUNT);
}

/* The agent as the object: a signal or a ptrace access aimed at it. */
static __always_inline int judge_agent_access(struct task_struct *target, __u32 target_slot,
					      __u32 hook, __u32 access, __u32 detail)
{
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};
	struct scratch *s;
	__u64 mntns = 0;
	__u32 scope;

	cfg = settings_watching(ENFORCER_WATCH_TAMPER_AGENT, &v);
	if (!cfg)
		return 0;
	if (!task_is_agent(cfg, target))
		return 0;
	s = tamper_hit(cfg, target_slot, &v, &mntns, &scope);
	if (!s)
		return 0;
	v.hook = hook;
	v.access = access;
	v.detail = detail;
	name_as_path(s, target->comm);	/* the path names the agent by its comm */
	return apply_rule(s, &v, mntns, scope);
}

/* Signals from user space only (kill, tgkill, pidfd_send_signal, sigqueue):
 * the kernel's own (OOM killer, cgroup.kill) never come here. Signal 0 only
 * probes that the process exists and is let through. */
LSM_PROBE(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
	  const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	if (sig == 0)
		return 0;
	return judge_agent_access(p, ENFORCER_TARGET_TAMPER_SIGNAL, ENFORCER_HOOK_TASK_KILL,
				  ENFORCER_ACCESS_SIGNAL, sig);
}

/* A signal the kernel sends on a file's I/O to the process the file's owner
 * named (fcntl F_SETOWN; O_ASYNC): SIGIO, or any signal chosen with F_SETSIG,
 * SIGKILL included. task_kill never sees it, and SIGIO's default action ends
 * the process too. The agent asks for none, so while a tamper rule protects
 * it every one aimed at it is refused, in audit mode too (refusing what it
 * never asks for breaks nothing). No event: this hook also runs in interrupt
 * context (a socket's data arriving), where the current task is whoever was
 * interrupted and the scratch buffer may be in use by the program that was;
 * the refusal is counted (sigio_refused), and the agent reports the count. */
LSM_PROBE(file_send_sigiotask, struct task_struct *tsk, struct fown_struct *fown, int sig, int ret)
{
	struct enforcer_settings *cfg;
	struct verdict_ctx v = {};

	if (ret)
		return ret;
	cfg = settings_watching(ENFORCER_WATCH_TAMPER_AGENT, &v);
	if (!cfg)
		return 0;
	if (!task_is_agent(cfg, tsk))
		return 0;
	count(ENFORCER_STAT_SIGIO_REFUSED);
	return -ENF_EPERM;
}

/* Attach-mode accesses only (ptrace attach, /proc/PID/mem, process_vm_writev,
 * pidfd_getfd): read-mode checks come from every `ps` reading /proc/PID/stat
 * and are let through (docs/threat-model.md). */
LSM_PROBE(ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	if (ret)
		return ret;
	if (!(mode & ENF_PTRACE_MODE_ATTACH))
		return 0;
	return judge_agent_access(child, ENFORCER_TARGET_TAMPER_PTRACE, ENFORCER_HOOK_PTRACE_ACCESS_CHECK,
				  ENFORCER_ACCESS_TRACE, mode);
}

/* Limits and scheduling set on the agent by another process: RLIMIT_CPU
 * makes the kernel itself kill it (SIGXCPU, then SIGKILL: no task_kill),
 * RLIMIT_NOFILE or RLIMIT_AS break its next reload, SCHED_IDLE or nice 19
 * starve its reports. Reading the agent's limits (prlimit without a new
 * value) is not judged. */
LSM_PROBE(task_setrlimit, struct task_struct *p, unsigned int resource, struct rlimit *new_rlim, int ret)
{
	if (ret)
		return ret;
	return judge_agent_access(p, ENFORCER_TARGET_TAMPER_RESOURCES, ENFORCER_HOOK_TASK_SETRLIMIT,
				  ENFORCER_ACCESS_LIMIT, resource);
}

LSM_PROBE(task_setscheduler, struct task_struct *p, int ret)
{
	if (ret)
		return ret;
	return judge_agent_access(p, ENFORCER_TARGET_TAMPER_RESOURCES, ENFORCER_HOOK_TASK_SETSCHEDULER,
				  ENFORCER_ACCESS_SCHEDULE, 0);
}

LSM_PROBE(task_setnice, struct task_struct *p, int nice, int ret)
{
	if (ret)
		return ret;
	/* the detail is unsigned: nice -20..19 travels as its two's complement */
	return judge_agent_access(p, ENFORCER_TARGET_TAMPER_RESOURCES, ENFORCER_HOOK_TASK_SETNICE,
				  ENFORCER_ACCESS_SCHEDULE, (__u32)nice);
}

LSM_PROBE(inode_rename, struct inode *old_dir, struct dentry *old_dentry,
	  struct inode *new_dir, struct dentry *new_dentry, int ret)
{
	struct enforcer_settings *cfg;
	struct scratch *s;
	struct verdict_ctx v = {};
	struct inode *inode = NULL;
	__u32 old_len = 0, new_len = 0, scope;
	__u64 mntns = 0;

	if (ret)
		return ret;
	ret = judge_entry_change(old_dir, old_dentry, new_dentry, ENFORCER_HOOK_INODE_RENAME);
	if (ret)
		return ret;
	/* cheap test first: renames are frequent, this name is rare */
	READ_KERNEL(old_len, old_dentry->d_name.len);
	READ_KERNEL(new_len, new_dentry->d_name.len);
	if (old_len != sizeof(NAME_RELEASE_AGENT) - 1 && new_len != sizeof(NAME_RELEASE_AGENT) - 1)
		return 0;
	if (!dentry_name_is(old_dentry, NAME_RELEASE_AGENT, sizeof(NAME_RELEASE_AGENT) - 1) &&
	    !dentry_name_is(new_dentry, NAME_RELEASE_AGENT, sizeof(NAME_RELEASE_AGENT) - 1))
		return 0;
	cfg = get_settings();
	if (!cfg || !(begin_decision(cfg, &v) & ENFORCER_WATCH_RENAME))
		return 0;
	READ_KERNEL(v.sb, old_dir->i_sb);
	if (v.sb) {
		unsigned long magic = 0;

		READ_KERNEL(magic, v.sb->s_magic);
		/* overlayfs performs the rename with vfs_rename() on its upper
		 * layer, which calls this hook again: that call decides (and a
		 * denial there fails the overlay rename), so one rename is
		 * reported once */
		if (magic == OVERLAYFS_SUPER_MAGIC)
			return 0;
	}
	s = target_hit(cfg, ENFORCER_TARGET_RELEASE_AGENT_RENAME, &v, &mntns, &scope);
	if (!s)
		return 0;
	v.hook = ENFORCER_HOOK_INODE_RENAME;
	v.access = ENFORCER_ACCESS_RENAME;
	v.has_new_path = 1;
	/* no vfsmount here: paths are relative to the filesystem's root */
	resolve_path(s, &s->obj, old_dentry, NULL);
	resolve_path(s, &s->aux, new_dentry, NULL);
	return apply_rule(s, &v, mntns, scope);
}

/*
 * Judges a file about to become executable code in the current task, for the
 * exec rules: the caller has set v->hook and v->access. The first check that
 * matches decides; its rule's allowlist applies. Returns the verdict.
 */
/* The exec place that holds `p`, a path inside the filesystem of index
 * `fs_index` (place_devs), or NULL. Sets p's namespace byte and prefix. */
static __always_inline struct enforcer_exec_place *located_place(struct path_buf *p, __u32 slot,
								 __u32 scope, __u32 fs_index)
{
	p->data[0] = ENFORCER_LOCATION_NS(slot & 1, scope, fs_index);
	set_prefix(p, 0);
	return exec_places.lookup((struct enforcer_lpm_key *)p);
}

/* place_devs' value for the filesystem of `sb` in policy slot `slot`: its
 * index (ENFORCER_PLACE_DEV_INDEX_MASK bits; 0: holds no place) and flags. */
static __always_inline __u32 place_dev_flags(struct super_block *sb, __u32 slot)
{
	struct enforcer_dev_key devkey = { .slot = slot & 1 };
	dev_t dev = 0;
	__u32 *value;

	READ_KERNEL(dev, sb->s_dev);
	devkey.dev = dev;
	value = place_devs.lookup(&devkey);
	return value ? *value : 0;
}

/* The dentry of a file's real inode. Since 6.6 an overlay's real file has
 * the real path; before (6.1) it carries the overlay's path ("fake path")
 * and only f_inode is real: then the inode's first alias. */
static __always_inline struct dentry *real_dentry_of(struct file *real)
{
	struct hlist_node *alias = NULL;
	struct dentry *dentry = NULL;
	struct inode *inode = NULL, *dentry_inode = NULL;

	READ_KERNEL(inode, real->f_inode);
	READ_KERNEL(dentry, real->f_path.dentry);
	if (dentry)
		READ_KERNEL(dentry_inode, dentry->d_inode);
	if (!inode || dentry_inode == inode)
		return dentry;
	READ_KERNEL(alias, inode->i_dentry.first);
	if (!alias)
		return NULL;
	return (struct dentry *)((char *)alias - offsetof(struct dentry, d_u.d_alias));
}

/*
 * An overlayfs file's layers (judge_exec_file, 2c): overlayfs keeps the file
 * it opened on the layer that serves the file (upper, or lower until a copy
 * up) in the overlay file's private_data (seen on 6.1 and 6.12, the kernels
 * the tests run; a later overlayfs may wrap it, which they would show). Follows up to ENFORCER_OVERLAY_DEPTH stacked overlays (a layer
 * that is itself a directory of an overlay, as /var of the test VM is) and
 * looks each real file up by location. Sets v->rule and friends and returns
 * 1 when a place's rule matches.
 */
static __always_inline int judge_overlay_layers(struct scratch *s, struct verdict_ctx *v,
						struct file *file, __u32 scope)
{
	struct enforcer_exec_place *place;
	struct file *real = file;

#pragma unroll
	for (int depth = 0; depth < ENFORCER_OVERLAY_DEPTH; depth++) {
		struct super_block *real_sb = NULL;
		struct dentry *real_dentry;
		struct inode *real_inode = NULL;
		struct file *next = NULL;
		unsigned long real_magic = 0;
		__u32 flags, fs_index;

		READ_KERNEL(next, real->private_data);
		if (!next)
			return 0;
		READ_KERNEL(real_inode, next->f_inode);
		if (!real_inode)
			return 0;
		READ_KERNEL(real_sb, real_inode->i_sb);
		if (!real_sb)
			return 0;
		flags = place_dev_flags(real_sb, v->slot);
		fs_index = flags & ENFORCER_PLACE_DEV_INDEX_MASK;
		if (fs_index) {
			real_dentry = real_dentry_of(next);
			if (real_dentry && resolve_path(s, &s->aux, real_dentry, NULL)) {
				place = located_place(&s->aux, v->slot, scope, fs_index);
				if (place) {
					v->rule = place->node_len == s->aux.dir_len ? place->rule_direct
										    : place->rule_below;
					if (v->rule) {
						v->match = ENFORCER_MATCH_LOCATION;
						v->has_new_path = 1;	/* the event says where it lives */
						return 1;
					}
				}
			}
		}
		READ_KERNEL(real_magic, real_sb->s_magic);
		if (real_magic != OVERLAYFS_SUPER_MAGIC || (flags & ENFORCER_PLACE_DEV_SYSTEM_OVERLAY))
			return 0;
		real = next;
	}
	return 0;
}

static __always_inline int judge_exec_file(struct enforcer_settings *cfg, struct scratch *s,
					   struct verdict_ctx *v, struct file *file)
{
	struct enforcer_exec_place *place = NULL;
	struct enforcer_fstype_key fskey = {};
	struct file_system_type *type = NULL;
	const char *type_name = NULL;
	struct dentry *dentry = NULL;
	struct vfsmount *vfsmnt = NULL;
	struct inode *inode = NULL;
	struct super_block *sb = NULL;
	unsigned long magic = 0;
	unsigned int nlink = 0;
	__u64 excluded = 0;
	__u64 mntns = 0;
	__u32 scope, *fs_rule, dev_flags = 0;
	int resolved;

	READ_KERNEL(dentry, file->f_path.dentry);
	READ_KERNEL(vfsmnt, file->f_path.mnt);
	READ_KERNEL(inode, file->f_inode);
	if (!inode)
		return 0;
	READ_KERNEL(sb, inode->i_sb);
	if (!sb)
		return 0;
	READ_KERNEL(magic, sb->s_magic);
	READ_KERNEL(nlink, inode->__i_nlink);
	scope = task_scope(cfg, &mntns);
	v->sb = sb;

	resolved = resolve_path(s, &s->obj, dentry, vfsmnt);

	/* 1. anonymous shared-memory file (memfd_create, unlinked tmpfs file) */
	if (nlink == 0 && (magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC)) {
		v->rule = target_rule(v->slot, ENFORCER_TARGET_EXEC_MEMFD, scope);
		if (v->rule) {
			v->match = ENFORCER_MATCH_MEMFD;
			return apply_rule(s, v, mntns, scope);
		}
	}

	/* 2. the deepest configured place that contains the file */
	if (resolved) {
		s->obj.data[0] = ENFORCER_KEY_NS(v->slot & 1, scope);
		set_prefix(&s->obj, 0);
		place = exec_places.lookup((struct enforcer_lpm_key *)&s->obj);
		if (place) {
			excluded = place->excluded;
			v->rule = place->node_len == s->obj.dir_len ? place->rule_direct
								    : place->rule_below;
			if (v->rule) {
				v->match = ENFORCER_MATCH_DIRECTORY;
				return apply_rule(s, v, mntns, scope);
			}
		}
	}

	/* 2b. the same places, by where the file lives: its filesystem and its
	 * path inside it, whatever name reached it (a bind mount, a chroot, a
	 * detached mount clone). Only for filesystems that hold a place. Where
	 * the file lives also decides when its name is excepted: a bind mount
	 * into an excluded directory does not shield a file from /tmp. When the
	 * name's walk crossed no mount and stopped at the filesystem's root (a
	 * file of the root filesystem, no chroot), the name is the location:
	 * no second walk. */
	{
		struct dentry *fs_root = NULL;
		__u32 fs_index;

		dev_flags = place_dev_flags(sb, v->slot);
		fs_index = dev_flags & ENFORCER_PLACE_DEV_INDEX_MASK;
		if (fs_index) {
			READ_KERNEL(fs_root, sb->s_root);
			place = NULL;
			if (resolved && !s->crossed && s->top == fs_root) {
				place = located_place(&s->obj, v->slot, scope, fs_index);
			} else if (resolve_path(s, &s->aux, dentry, NULL)) {
				place = located_place(&s->aux, v->slot, scope, fs_index);
				v->has_new_path = 1;	/* the event says where it lives */
			}
			if (place) {
				excluded = place->excluded;
				v->rule = place->node_len == (v->has_new_path ? s->aux.dir_len : s->obj.dir_len)
						  ? place->rule_direct : place->rule_below;
				if (v->rule) {
					v->match = ENFORCER_MATCH_LOCATION;
					return apply_rule(s, v, mntns, scope);
				}
			}
			v->has_new_path = 0;
		}
	}

	/* 2c. a file an overlayfs serves (not one of the host's system
	 * overlays): judged again where the layer that serves it lives, so that
	 * an overlay whose lower (or upper) layer is a directory in /var/tmp,
	 * mounted anywhere, in any namespace, does not launder its files. */
	if (magic == OVERLAYFS_SUPER_MAGIC && !(dev_flags & ENFORCER_PLACE_DEV_SYSTEM_OVERLAY) &&
	    judge_overlay_layers(s, v, file, scope))
		return apply_rule(s, v, mntns, scope);

	/* 3. the filesystem type the file lives on */
	READ_KERNEL(type, sb->s_type);
	if (type)
		READ_KERNEL(type_name, type->name);
	if (type_name) {
		bpf_probe_read_kernel_str(fskey.name, sizeof(fskey.name), type_name);
		fskey.ns = ENFORCER_KEY_NS(v->slot & 1, scope);
		fs_rule = exec_fstypes.lookup(&fskey);
		if (fs_rule && *fs_rule && !(excluded & ENFORCER_RULE_BIT(*fs_rule))) {
			v->rule = *fs_rule;
			v->match = ENFORCER_MATCH_FILESYSTEM;
			return apply_rule(s, v, mntns, scope);
		}
	}

	/* 4. fail safe: a path too deep to resolve is not assumed harmless */
	if (!resolved) {
		v->rule = target_rule(v->slot, ENFORCER_TARGET_EXEC_UNRESOLVED, scope);
		if (v->rule) {
			v->match = ENFORCER_MATCH_UNRESOLVED;
			return apply_rule(s, v, mntns, scope);
		}
	}
	return 0;
}

/* The exec rules on the file of an exec, or of an interpreter's check of one. */
static __always_inline int judge_bprm(struct linux_binprm *bprm, __u32 hook)
{
	struct enforcer_settings *cfg;
	struct scratch *s;
	struct verdict_ctx v = {};
	struct file *file = NULL;

	cfg = get_settings();
	if (!cfg || !(begin_decision(cfg, &v) & ENFORCER_WATCH_EXEC))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	READ_KERNEL(file, bprm->file);
	if (!file)
		return 0;
	v.hook = hook;
	v.access = ENFORCER_ACCESS_EXEC;
	v.needs = ENFORCER_RULE_EXEC;
	return judge_exec_file(cfg, s, &v, file);
}

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	return judge_bprm(bprm, ENFORCER_HOOK_BPRM_CHECK_SECURITY);
}

/*
 * Every mount parameter, however it arrives, passes through here before the
 * filesystem parses it: mount(2) and remount options (split by the VFS), and
 * fsconfig(2) of the new mount API. The one that matters is release_agent on
 * cgroup v1 (also for the "cpuset" filesystem, which is cgroup v1 inside):
 * it names a program the kernel runs as root on the host, the escape that
 * writing the release_agent file is. Returning 0 lets the filesystem parse
 * the parameter (the hook's default, -ENOPARAM, then applies).
 */
LSM_PROBE(fs_context_parse_param, struct fs_context *fc, struct fs_parameter *param, int ret)
{
	struct enforcer_settings *cfg;
	const char *key, *value;
	struct scratch *s;
	struct verdict_ctx v = {};
	__u64 mntns = 0;
	__u32 scope;

	if (ret)
		return ret;
	cfg = get_settings();
	if (!cfg || !(begin_decision(cfg, &v) & ENFORCER_WATCH_CGROUP_MOUNT))
		return 0;
	/* plain loads through the BTF-typed arguments (a NULL reads as 0) */
	key = param->key;
	if (!kernel_str_is(key, NAME_RELEASE_AGENT, sizeof(NAME_RELEASE_AGENT) - 1))
		return 0;
	if (!kernel_str_is(fc->fs_type->name, NAME_CGROUP_FS, sizeof(NAME_CGROUP_FS) - 1))
		return 0;
	s = target_hit(cfg, ENFORCER_TARGET_RELEASE_AGENT_MOUNT, &v, &mntns, &scope);
	if (!s)
		return 0;
	v.hook = ENFORCER_HOOK_FS_CONTEXT_PARSE_PARAM;
	v.access = ENFORCER_ACCESS_MOUNT;
	v.has_new_path = 1;
	/* the event names the parameter as its path and the value as new_path */
	bpf_probe_read_kernel_str(&s->obj.data[1], sizeof(NAME_RELEASE_AGENT), key);
	s->obj.truncated = 0;
	s->aux.data[1] = 0;
	if (param->type == fs_value_is_string) {
		value = param->string;
		if (value && bpf_probe_read_kernel_str(&s->aux.data[1], ENFORCER_EVENT_STR_LEN, value) ==
				     ENFORCER_EVENT_STR_LEN)
			s->obj.truncated = 1;	/* the value did not fit */
	}
	return apply_rule(s, &v, mntns, scope);
}

/*
 * An interpreter asks, with execveat(fd, "", ..., AT_EXECVE_CHECK), whether
 * the kernel would execute the script it is about to run (Linux 6.14+). The
 * kernel then stops after this hook: bprm_check_security never runs for such
 * a check, so the exec rules answer here, on the script itself. Interpreters
 * that opt in (SECBIT_EXEC_RESTRICT_FILE) then refuse a script in /tmp as the
 * kernel refuses a binary there. A real exec passes here too (is_check
 * clear) and is left to bprm_check_security, which sees the final file.
 * Kernels without AT_EXECVE_CHECK get a program that only returns.
 */
LSM_PROBE(bprm_creds_for_exec, struct linux_binprm *bprm, int ret)
{
#ifdef ENFORCER_BPRM_IS_CHECK_BYTE
	__u8 flags = 0;

	if (ret)
		return ret;
	bpf_probe_read_kernel(&flags, sizeof(flags), (char *)bprm + ENFORCER_BPRM_IS_CHECK_BYTE);
	if (!(flags & ENFORCER_BPRM_IS_CHECK_MASK))
		return 0;
	return judge_bprm(bprm, ENFORCER_HOOK_BPRM_CREDS_FOR_EXEC);
#else
	return ret;
#endif
}

/*
 * A file about to become executable code in the current task without an
 * exec: ld.so mapping its argument (`ld.so /tmp/x`), LD_PRELOAD, dlopen().
 * The exec rules decide it as they decide an exec of the file. Leaves early
 * for what is not loading code from a file: no PROT_EXEC, anonymous memory
 * (JIT compilers), devices (/dev/zero), and the task's own program, which
 * its exec already decided (the kernel maps it, and its ld.so, while
 * executing it, with the new program already the task's executable).
 */
static __always_inline int judge_exec_mapping(struct file *file, __u32 hook)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct enforcer_settings *cfg;
	struct scratch *s;
	struct verdict_ctx v = {};
	struct inode *inode = NULL;
	struct inode *exe_inode = NULL;
	struct mm_struct *mm = NULL;
	struct file *exe = NULL;
	umode_t mode = 0;

	READ_KERNEL(inode, file->f_inode);
	if (!inode)
		return 0;
	READ_KERNEL(mode, inode->i_mode);
	if ((mode & ENF_S_IFMT) != ENF_S_IFREG)
		return 0;
	cfg = get_settings();
	if (!cfg || !(begin_decision(cfg, &v) & ENFORCER_WATCH_EXEC))
		return 0;
	READ_KERNEL(mm, task->mm);
	if (mm)
		READ_KERNEL(exe, mm->exe_file);
	if (exe)
		READ_KERNEL(exe_inode, exe->f_inode);
	if (exe_inode == inode)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	v.hook = hook;
	v.access = ENFORCER_ACCESS_MAP;
	v.needs = ENFORCER_RULE_MAP;
	return judge_exec_file(cfg, s, &v, file);
}

LSM_PROBE(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags, int ret)
{
	if (ret)
		return ret;
	if (!(prot & ENF_PROT_EXEC) || !file)
		return 0;
	return judge_exec_mapping(file, ENFORCER_HOOK_MMAP_FILE);
}

/* Only a change that makes a file mapping executable: one that already is
 * adds nothing, and anonymous memory is never a file's code. */
LSM_PROBE(file_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot, int ret)
{
	unsigned long vm_flags = 0;
	struct file *file = NULL;

	if (ret)
		return ret;
	if (!(prot & ENF_PROT_EXEC))
		return 0;
	READ_KERNEL(vm_flags, vma->vm_flags);
	if (vm_flags & ENF_VM_EXEC)
		return 0;
	READ_KERNEL(file, vma->vm_file);
	if (!file)
		return 0;
	return judge_exec_mapping(file, ENFORCER_HOOK_FILE_MPROTECT);
}
