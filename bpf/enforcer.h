/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The only contract between enforcer's BPF programs and its Python side.
 *
 * Every constant comes from enforcer/abi.py as a -D flag (abi.cflags());
 * this header spells no number of its own. The struct layouts mirror the
 * ctypes classes in enforcer/abi.py; tests/unit/test_abi_layout.py compiles
 * this header and compares every size and offset.
 *
 * Needs __u8/__u16/__u32/__u64 to be defined before inclusion (the
 * BTF-generated kernel header does that under bcc; <linux/types.h> in tests).
 */
#ifndef ENFORCER_H
#define ENFORCER_H

#if !defined(ENFORCER_MAX_RULES) || !defined(ENFORCER_LPM_DATA_LEN) ||      \
    !defined(ENFORCER_EVENT_STR_LEN) || !defined(ENFORCER_TARGET_COUNT) ||  \
    !defined(ENFORCER_STAT_COUNT) || !defined(ENFORCER_PATH_WALK_STEPS) || \
    !defined(ENFORCER_SCOPE_COUNT) || !defined(ENFORCER_POLICY_SLOTS) || \
    !defined(ENFORCER_LOCATION_SHIFT) || !defined(ENFORCER_ANCESTRY_MAX)
#error "enforcer.h needs the -D flags from enforcer.abi.cflags()"
#endif

/*
 * Every policy map holds two complete policies side by side, one per policy
 * slot; settings.active names the slot the hooks decide with. A reload writes
 * the new policy into the other slot, then flips `active` (one byte), then
 * clears the old slot once no hook can still be using it. A hook reads
 * `active` once and looks up everything in that slot, so it never sees half
 * of one policy and half of another (docs/design.md, "Reload").
 */
#if ENFORCER_POLICY_SLOTS != 2 || ENFORCER_SCOPE_COUNT != 2
#error "the slot and scope encodings below assume two policy slots and two scopes"
#endif

/* Index of rule N of a slot in the rules map; abi.rule_index() in Python. */
#define ENFORCER_RULE_INDEX(slot, rule) ((slot) * (ENFORCER_MAX_RULES + 1) + (rule))

/* Index of (target, scope) of a slot in the targets map; abi.target_index(). */
#define ENFORCER_TARGET_INDEX(slot, target, scope)                                 \
	((slot) * ENFORCER_TARGET_COUNT * ENFORCER_SCOPE_COUNT +                   \
	 (target) * ENFORCER_SCOPE_COUNT + (scope))

/* Namespace byte of LPM keys (byte 0) and of exec_fstypes keys: the slot and
 * the scope (0 for allowlists, which have none); abi.key_namespace(). */
#define ENFORCER_KEY_NS(slot, scope) (((slot) << 1) | (scope))

/* Bit of rule N in a 64-bit allowlist or exclusion mask. Rules are numbered
 * up to ENFORCER_MAX_RULES, which is therefore also the mask that keeps the
 * shift below 64 (the verifier needs that bound). */
#define ENFORCER_RULE_BIT(rule) (1ULL << ((rule) & ENFORCER_MAX_RULES))
#if ENFORCER_MAX_RULES > 63 || ((ENFORCER_MAX_RULES + 1) & ENFORCER_MAX_RULES)
#error "ENFORCER_MAX_RULES must be 2^n - 1 and at most 63: it masks rule bits"
#endif

struct enforcer_settings {
	__u64 host_mntns;	/* inode number of the initial mount namespace */
	__u8 active;		/* policy slot in force: the only byte a reload's flip changes */
	__u8 reserved[3];
	__u32 generation[ENFORCER_POLICY_SLOTS];	/* policy generation held by each slot */
	__u32 watch[ENFORCER_POLICY_SLOTS];	/* ENFORCER_WATCH_* flags of each slot */
	/* the running agent, which the tamper rules never judge: its tgid and its
	 * start time in clock ticks (a reused pid is not the agent); 0: none */
	__u32 agent_tgid;
	__u32 pins_dev;		/* s_dev of the bpffs holding enforcer's pin directory (0: no pins) */
	__u32 tick_ns;		/* ns per clock tick, for agent_start_ticks */
	__u64 pins_ino;		/* inode number of the pin directory */
	__u64 agent_start_ticks;	/* start_boottime / tick_ns of the agent's thread group leader */
	/* the policy directory (/etc/enforcer): s_dev of its filesystem and
	 * its inode number; 0: not protected */
	__u64 policy_ino;
	__u32 policy_dev;
	__u32 reserved2;
	/* inode numbers of the directories above it on its filesystem, nearest
	 * first, up to its mount's root; 0: none */
	__u64 policy_ancestors[ENFORCER_POLICY_ANCESTORS];
};

/* protected_objects key: one of enforcer's own BPF objects. */
struct enforcer_object_key {
	__u32 kind;		/* ENFORCER_OBJECT_* */
	__u32 id;		/* the kernel's map, program or link id */
};

struct enforcer_rule_config {
	__u32 flags;		/* ENFORCER_RULE_* flags */
};

struct enforcer_lpm_key {
	__u32 prefixlen;	/* bits of data compared */
	__u8 data[ENFORCER_LPM_DATA_LEN];	/* [0] namespace byte, then path */
};

struct enforcer_exec_place {
	__u32 node_len;		/* bytes of "<dir>/" this node stands for */
	__u16 rule_direct;	/* rule for files directly in the directory */
	__u16 rule_below;	/* rule for files deeper down */
	__u64 excluded;		/* mask of rules this place is excepted from */
};

struct enforcer_fstype_key {
	char name[ENFORCER_FSTYPE_NAME_LEN];
	__u32 ns;		/* ENFORCER_KEY_NS(slot, scope) */
};

/* place_devs key: a filesystem (super_block.s_dev) that holds a listed exec
 * place, in one policy slot; the value is its index (1..63), which location
 * keys of exec_places carry above the slot and scope bits. */
struct enforcer_dev_key {
	__u32 dev;
	__u32 slot;
};
/* Namespace byte of an exec_places key that places a file by where it lives:
 * slot, scope and the index of its filesystem; abi.location_namespace(). */
#define ENFORCER_LOCATION_NS(slot, scope, fs_index)                                \
	(ENFORCER_KEY_NS(slot, scope) |                                            \
	 (((fs_index) & ((1 << (8 - ENFORCER_LOCATION_SHIFT)) - 1)) << ENFORCER_LOCATION_SHIFT))
struct enforcer_uid_key {
	__u32 uid;
	__u32 slot;
};

/* A process above the acting one: its thread group leader's identity. pid
 * and start_ns together name one process (a pid alone may have been reused). */
struct enforcer_ancestor {
	__u64 start_ns;		/* task->start_boottime: ns since boot */
	__u32 pid;		/* tgid, initial pid namespace */
	__u32 reserved;
	char comm[ENFORCER_COMM_LEN];
};

#if ENFORCER_ANCESTRY_MAX & (ENFORCER_ANCESTRY_MAX - 1)
#error "ENFORCER_ANCESTRY_MAX must be a power of two: it masks the ancestor index"
#endif

struct enforcer_event {
	__u64 boot_ns;
	__u64 cgroup_id;
	__u64 mntns;
	__u32 rule;
	__u32 generation;	/* policy generation that decided: names the rule table */
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 flags;		/* ENFORCER_EVENT_* flags */
	__u8 hook;
	__u8 access;
	__u8 action;
	__u8 match;
	char comm[ENFORCER_COMM_LEN];
	char fstype[ENFORCER_FSTYPE_NAME_LEN];
	char path[ENFORCER_EVENT_STR_LEN];
	char new_path[ENFORCER_EVENT_STR_LEN];
	char exe[ENFORCER_EVENT_STR_LEN];
	char cgroup[ENFORCER_EVENT_STR_LEN];
	__u64 start_ns;		/* acting process's start_boottime (ENFORCER_EVENT_START_KNOWN) */
	__u32 loginuid;		/* audit login uid (ENFORCER_EVENT_LOGIN_KNOWN) */
	__u32 sessionid;	/* audit session id (ENFORCER_EVENT_LOGIN_KNOWN) */
	__u32 ancestry_len;	/* ancestors[] filled: [0] the parent, then its parent ... */
	__u32 detail;		/* tamper events: object id, signal number or ptrace mode */
	struct enforcer_ancestor ancestors[ENFORCER_ANCESTRY_MAX];
};

#endif /* ENFORCER_H */
