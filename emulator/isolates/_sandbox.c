/* The kernel calls an isolate needs to sandbox itself, without ctypes.
 *
 * Why C: the isolate must not hold a native-call capability that tenant code could reach (Python
 * code in a process can reach every object of its interpreter, so a loaded ``ctypes`` is always one
 * ``gc.get_objects()`` away). This module offers only calls that restrict the calling process:
 * Landlock, a seccomp filter, no-new-privileges, dropping capabilities, a private network
 * namespace. Calling any of them again can only take more away.
 *
 * The seccomp policy lives here, not in Python, so that system call numbers come from the C
 * library's headers for the architecture being built instead of from hand-copied tables.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef TIOCLINUX
#define TIOCLINUX 0x541C
#endif
#ifndef F_SETSIG
#define F_SETSIG 10
#endif
#ifndef F_SETOWN_EX
#define F_SETOWN_EX 15
#endif
#ifndef FIOSETOWN
#define FIOSETOWN 0x8901
#endif
#ifndef SIOCSPGRP
#define SIOCSPGRP 0x8902
#endif

/* ---- Landlock (uapi values, so that older headers still build) -------------------------------- */

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif
#define LL_CREATE_RULESET_VERSION 1u
#define LL_RULE_PATH_BENEATH 1
#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_NET_BIND_TCP (1ULL << 0)
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define LL_SCOPE_SIGNAL (1ULL << 1)

struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

struct ll_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

static long landlock_abi_now(void) {
    long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    return abi < 0 ? 0 : abi;
}

static uint64_t fs_rights(long abi) {
    uint64_t rights = (1ULL << 13) - 1; /* ABI 1: execute, write, read, make and remove all */
    if (abi >= 2) rights |= 1ULL << 13; /* refer */
    if (abi >= 3) rights |= 1ULL << 14; /* truncate */
    if (abi >= 5) rights |= 1ULL << 15; /* ioctl on devices */
    return rights;
}

static PyObject *sb_landlock_abi(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(landlock_abi_now());
}

/* landlock_ruleset(rules) -> (fd, granted): a ruleset that handles every file right, TCP bind and
 * connect, abstract Unix sockets and signals, and grants only what ``rules`` says: each rule is a
 * (path, what) pair, ``what`` 1 to read files beneath ``path``, 2 to list folders beneath it, 3
 * both. A path that does not exist grants nothing. */
static PyObject *sb_landlock_ruleset(PyObject *self, PyObject *args) {
    PyObject *rules;
    if (!PyArg_ParseTuple(args, "O", &rules)) return NULL;
    PyObject *seq = PySequence_Fast(rules, "rules must be a sequence");
    if (seq == NULL) return NULL;
    long abi = landlock_abi_now();
    if (abi == 0) {
        Py_DECREF(seq);
        errno = EOPNOTSUPP;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct ll_ruleset_attr attr = {fs_rights(abi), 0, 0};
    size_t size = 8;
    if (abi >= 4) { attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP; size = 16; }
    if (abi >= 6) { attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL; size = 24; }
    int ruleset = (int)syscall(__NR_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) { Py_DECREF(seq); return PyErr_SetFromErrno(PyExc_OSError); }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    long granted = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *bytes = NULL, *path;
        int what;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "Oi", &path, &what)) goto fail;
        if (!PyUnicode_FSConverter(path, &bytes)) goto fail;
        int fd = open(PyBytes_AS_STRING(bytes), O_PATH | O_CLOEXEC);
        Py_DECREF(bytes);
        if (fd < 0) continue; /* a path that does not exist grants nothing */
        struct stat st;
        if (fstat(fd, &st) != 0) { close(fd); continue; }
        uint64_t allowed = ((what & 1) ? LL_FS_READ_FILE : 0) |
                           ((what & 2) && S_ISDIR(st.st_mode) ? LL_FS_READ_DIR : 0);
        if (allowed == 0) { close(fd); continue; }
        struct ll_path_beneath_attr rule = {allowed, fd};
        long done = syscall(__NR_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0);
        int saved = errno;
        close(fd);
        if (done < 0) { errno = saved; PyErr_SetFromErrno(PyExc_OSError); goto fail; }
        granted++;
    }
    Py_DECREF(seq);
    return Py_BuildValue("(il)", ruleset, granted);
fail:
    Py_DECREF(seq);
    close(ruleset);
    return NULL;
}

/* landlock_enforce(fd): restrict this thread, and every thread it starts afterwards. */
static PyObject *sb_landlock_enforce(PyObject *self, PyObject *args) {
    int ruleset;
    if (!PyArg_ParseTuple(args, "i", &ruleset)) return NULL;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (syscall(__NR_landlock_restrict_self, ruleset, 0) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* ---- seccomp ---------------------------------------------------------------------------------- */

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef NATIVE_ARCH

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#else
#define ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#endif

static struct sock_filter op(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
    struct sock_filter instruction = {code, jt, jf, k};
    return instruction;
}

#define RET(value) op(BPF_RET | BPF_K, (value), 0, 0)
#define RET_ALLOW RET(SECCOMP_RET_ALLOW)
#define RET_EPERM RET(SECCOMP_RET_ERRNO | EPERM)
#define LOAD(off) op(BPF_LD | BPF_W | BPF_ABS, (off), 0, 0)
#define JEQ(k, t, f) op(BPF_JMP | BPF_JEQ | BPF_K, (k), (t), (f))

/* Calls an isolate never needs, refused with EPERM: changing the clock, the machine's identity or
 * its kernel; other processes (tracing, their memory, their limits and scheduling); namespaces and
 * mounts; new programs and child processes; identities and capabilities; memory the limits do not
 * see (anonymous files, System V and POSIX IPC objects that outlive the process); io_uring, which
 * would bypass every other rule here; and sockets, apart from the connected pairs checked below. */
static const int denied[] = {
#ifdef __NR_fork
    __NR_fork,
#endif
#ifdef __NR_vfork
    __NR_vfork,
#endif
    __NR_execve, __NR_execveat,
    __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev, __NR_kcmp,
#ifdef __NR_pidfd_open
    __NR_pidfd_open, __NR_pidfd_send_signal, __NR_pidfd_getfd,
#endif
#ifdef __NR_process_madvise
    __NR_process_madvise,
#endif
#ifdef __NR_process_mrelease
    __NR_process_mrelease,
#endif
    __NR_tkill, __NR_move_pages, __NR_migrate_pages,
    __NR_settimeofday, __NR_clock_settime, __NR_clock_adjtime, __NR_adjtimex,
    __NR_reboot, __NR_sethostname, __NR_setdomainname, __NR_syslog,
    __NR_bpf, __NR_perf_event_open, __NR_init_module, __NR_finit_module, __NR_delete_module,
    __NR_kexec_load,
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
    __NR_acct, __NR_swapon, __NR_swapoff, __NR_quotactl, __NR_vhangup,
#ifdef __NR_quotactl_fd
    __NR_quotactl_fd,
#endif
#ifdef __NR_iopl
    __NR_iopl, __NR_ioperm,
#endif
#ifdef __NR_modify_ldt
    __NR_modify_ldt,
#endif
#ifdef __NR_uselib
    __NR_uselib,
#endif
#ifdef __NR__sysctl
    __NR__sysctl,
#endif
#ifdef __NR_lookup_dcookie
    __NR_lookup_dcookie,
#endif
    __NR_personality,
    __NR_mount, __NR_umount2, __NR_pivot_root, __NR_chroot, __NR_unshare, __NR_setns,
#ifdef __NR_fsopen
    __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_move_mount, __NR_open_tree, __NR_fspick,
#endif
#ifdef __NR_mount_setattr
    __NR_mount_setattr,
#endif
    __NR_add_key, __NR_request_key, __NR_keyctl,
#ifdef __NR_io_uring_setup
    __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
#endif
    __NR_memfd_create,
#ifdef __NR_memfd_secret
    __NR_memfd_secret,
#endif
    __NR_userfaultfd,
    __NR_shmget, __NR_shmat, __NR_shmctl, __NR_shmdt, __NR_semget, __NR_semop, __NR_semctl,
    __NR_semtimedop, __NR_msgget, __NR_msgsnd, __NR_msgrcv, __NR_msgctl,
    __NR_mq_open, __NR_mq_unlink, __NR_mq_timedsend, __NR_mq_timedreceive, __NR_mq_notify,
    __NR_mq_getsetattr,
#ifdef __NR_setrlimit
    __NR_setrlimit,
#endif
    __NR_setpriority, __NR_ioprio_set, __NR_sched_setaffinity, __NR_sched_setscheduler,
    __NR_sched_setparam, __NR_sched_setattr,
    __NR_setuid, __NR_setgid, __NR_setreuid, __NR_setregid, __NR_setresuid, __NR_setresgid,
    __NR_setfsuid, __NR_setfsgid, __NR_setgroups, __NR_capset,
    __NR_open_by_handle_at, __NR_name_to_handle_at, __NR_fanotify_init,
    __NR_fchmod, __NR_fchmodat, __NR_fchown, __NR_fchownat,
#ifdef __NR_chmod
    __NR_chmod, __NR_chown, __NR_lchown, __NR_utime, __NR_utimes, __NR_futimesat,
#endif
#ifdef __NR_fchmodat2
    __NR_fchmodat2,
#endif
    __NR_utimensat,
    __NR_setxattr, __NR_lsetxattr, __NR_fsetxattr, __NR_removexattr, __NR_lremovexattr,
    __NR_fremovexattr,
    __NR_socket, __NR_connect, __NR_bind, __NR_listen, __NR_accept, __NR_accept4,
};

#define MAX_PROGRAM 512

/* The filter for an isolate whose process id is ``self_pid``. Each rule is a short block that
 * ends in a return, so every jump stays within the 255 instructions a BPF jump can span. */
static int isolate_program(struct sock_filter *p, uint32_t self_pid) {
    int n = 0;
    p[n++] = LOAD(offsetof(struct seccomp_data, arch));
    p[n++] = JEQ(NATIVE_ARCH, 1, 0);
    p[n++] = RET(SECCOMP_RET_KILL_PROCESS); /* another ABI's numbers */
    p[n++] = LOAD(offsetof(struct seccomp_data, nr));
#ifdef __X32_SYSCALL_BIT
    p[n++] = op(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1);
    p[n++] = RET_EPERM;
#endif
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        p[n++] = JEQ((uint32_t)denied[i], 0, 1);
        p[n++] = RET_EPERM;
    }
    /* clone3 keeps its flags in memory a filter cannot read: ENOSYS makes the C library fall back
     * to clone, whose flags are checked below */
    p[n++] = JEQ(__NR_clone3, 0, 1);
    p[n++] = RET(SECCOMP_RET_ERRNO | ENOSYS);
    /* clone: threads only */
    p[n++] = JEQ(__NR_clone, 0, 4);
    p[n++] = LOAD(ARG_LOW(0));
    p[n++] = op(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0);
    p[n++] = RET_EPERM;
    p[n++] = RET_ALLOW;
    /* signals: to this process only (never 0 or -1, which reach a whole group) */
    const int to_self[] = {__NR_kill, __NR_tgkill, __NR_rt_sigqueueinfo, __NR_rt_tgsigqueueinfo};
    for (size_t i = 0; i < sizeof(to_self) / sizeof(to_self[0]); i++) {
        p[n++] = JEQ((uint32_t)to_self[i], 0, 4);
        p[n++] = LOAD(ARG_LOW(0));
        p[n++] = JEQ(self_pid, 1, 0);
        p[n++] = RET_EPERM;
        p[n++] = RET_ALLOW;
    }
    /* resource limits: its own only */
    p[n++] = JEQ(__NR_prlimit64, 0, 5);
    p[n++] = LOAD(ARG_LOW(0));
    p[n++] = JEQ(0, 2, 0);
    p[n++] = JEQ(self_pid, 1, 0);
    p[n++] = RET_EPERM;
    p[n++] = RET_ALLOW;
    /* socket pairs: connected Unix stream pairs only (an event loop's self-pipe) */
    p[n++] = JEQ(__NR_socketpair, 0, 7);
    p[n++] = LOAD(ARG_LOW(0));
    p[n++] = JEQ(AF_UNIX, 0, 3);
    p[n++] = LOAD(ARG_LOW(1));
    p[n++] = op(BPF_ALU | BPF_AND | BPF_K, 0xF, 0, 0);
    p[n++] = JEQ(SOCK_STREAM, 1, 0);
    p[n++] = RET_EPERM;
    p[n++] = RET_ALLOW;
    /* fcntl: no signal owner for a descriptor, nor the signal it sends: the kernel would signal
     * that process or group (the zygote's, every isolate in it) when the descriptor is ready,
     * past the rule on kill above */
    p[n++] = JEQ(__NR_fcntl, 0, 6);
    p[n++] = LOAD(ARG_LOW(1));
    p[n++] = JEQ(F_SETOWN, 3, 0);
    p[n++] = JEQ(F_SETOWN_EX, 2, 0);
    p[n++] = JEQ(F_SETSIG, 1, 0);
    p[n++] = RET_ALLOW;
    p[n++] = RET_EPERM;
    /* ioctl: no typing into a terminal, no signal owner (the fcntl rule's ioctl twins) */
    p[n++] = JEQ(__NR_ioctl, 0, 7);
    p[n++] = LOAD(ARG_LOW(1));
    p[n++] = JEQ(TIOCSTI, 4, 0);
    p[n++] = JEQ(TIOCLINUX, 3, 0);
    p[n++] = JEQ(FIOSETOWN, 2, 0);
    p[n++] = JEQ(SIOCSPGRP, 1, 0);
    p[n++] = RET_ALLOW;
    p[n++] = RET_EPERM;
    p[n++] = RET_ALLOW;
    return n;
}

/* seccomp_isolate(pid): install the isolate filter on every thread of this process. */
static PyObject *sb_seccomp_isolate(PyObject *self, PyObject *args) {
    unsigned int pid;
    if (!PyArg_ParseTuple(args, "I", &pid)) return NULL;
    struct sock_filter program[MAX_PROGRAM];
    int n = isolate_program(program, pid);
    struct sock_fprog fprog = {(unsigned short)n, program};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    long done = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
    if (done != 0) {
        if (done > 0) {
            PyErr_Format(PyExc_OSError, "thread %ld could not take the seccomp filter", done);
            return NULL;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(n);
}

static PyObject *sb_seccomp_supported(PyObject *self, PyObject *unused) { Py_RETURN_TRUE; }

#else  /* no filter for this architecture */

static PyObject *sb_seccomp_isolate(PyObject *self, PyObject *args) {
    errno = EOPNOTSUPP;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static PyObject *sb_seccomp_supported(PyObject *self, PyObject *unused) { Py_RETURN_FALSE; }

#endif

/* ---- privileges and namespaces ---------------------------------------------------------------- */

/* drop_capabilities(): empty the bounding and ambient sets, so that nothing this process or its
 * descendants run can ever gain a capability again; returns how many were dropped from the
 * bounding set. Needs CAP_SETPCAP for the bounding set (root has it); without it only the ambient
 * set is cleared. The permitted and effective sets empty themselves when root switches to
 * another user. */
static PyObject *sb_drop_capabilities(PyObject *self, PyObject *unused) {
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    long dropped = 0;
    for (int cap = 0; cap < 64; cap++) {
        int present = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (present < 0) break; /* past the kernel's last capability */
        if (present == 0) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EPERM) break;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        dropped++;
    }
    return PyLong_FromLong(dropped);
}

/* clear_capabilities(): empty the permitted, effective and inheritable sets of every thread's
 * credentials this thread holds (a process that kept capabilities in a user namespace of its own). */
static PyObject *sb_clear_capabilities(PyObject *self, PyObject *unused) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(__NR_capset, &header, data) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *sb_no_new_privs(PyObject *self, PyObject *unused) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* die_with_parent(): SIGKILL this process when the process that forked it ends. */
static PyObject *sb_die_with_parent(PyObject *self, PyObject *unused) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* unshare_network(with_user): a new, empty network namespace for this process (with a new user
 * namespace too, for a process that is not root). */
static PyObject *sb_unshare_network(PyObject *self, PyObject *args) {
    int with_user;
    if (!PyArg_ParseTuple(args, "p", &with_user)) return NULL;
    int flags = CLONE_NEWNET | (with_user ? CLONE_NEWUSER : 0);
    if (unshare(flags) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

#endif  /* __linux__ */

static PyMethodDef methods[] = {
#ifdef __linux__
    {"landlock_abi", sb_landlock_abi, METH_NOARGS, "The kernel's Landlock ABI version (0: none)."},
    {"landlock_ruleset", sb_landlock_ruleset, METH_VARARGS,
     "A Landlock ruleset granting reads beneath the given paths: (fd, paths granted)."},
    {"landlock_enforce", sb_landlock_enforce, METH_VARARGS,
     "Restrict this thread and the threads it starts to a ruleset."},
    {"seccomp_isolate", sb_seccomp_isolate, METH_VARARGS,
     "Install the isolate's seccomp filter on every thread; returns its length."},
    {"seccomp_supported", sb_seccomp_supported, METH_NOARGS,
     "Whether this build has a seccomp filter for this architecture."},
    {"drop_capabilities", sb_drop_capabilities, METH_NOARGS,
     "Empty the bounding and ambient capability sets."},
    {"clear_capabilities", sb_clear_capabilities, METH_NOARGS,
     "Empty the permitted, effective and inheritable capability sets."},
    {"no_new_privs", sb_no_new_privs, METH_NOARGS, "Set no-new-privileges."},
    {"die_with_parent", sb_die_with_parent, METH_NOARGS, "SIGKILL this process with its parent."},
    {"unshare_network", sb_unshare_network, METH_VARARGS,
     "Move this process into a new, empty network namespace."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sandbox",
    "Kernel calls that restrict the calling process (Landlock, seccomp, capabilities, "
    "namespaces), for isolates.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__sandbox(void) { return PyModule_Create(&module); }
