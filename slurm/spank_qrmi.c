/*
 * spank_qrmi: the --qpu option of sbatch/salloc/srun, as a thin shim over a Python helper.
 *
 * All decisions (config, QPU lookup, acquire, release, per-job state) live in the helper
 * (python -m qrmi.slurm.helper).  This file only:
 *   - registers and validates --qpu=NAMES in the client (sbatch, salloc, srun);
 *   - in slurmstepd (remote context) runs the helper as root with a clean environment, argv,
 *     a timeout and a process-group kill, and imports the KEY=VALUE lines it prints; nothing
 *     the job's user set (environment, files) is passed to the helper: it takes every setting
 *     from the admin's config, and what the job was granted (time limit, licenses) from
 *     slurmctld: the shim asks with slurm_load_job, whose symbol slurmstepd already has, and
 *     passes the answer on; where that fails, the helper runs squeue itself;
 *   - defers every error to slurm_spank_task_init, because an error returned earlier in the
 *     batch step DRAINS the node and reports the job COMPLETED;
 *   - starts "helper release" (detached) when the step that acquired ends, if the helper said so,
 *     holding the job's lock from before the step goes on (the Epilog waits for that lock
 *     rather than starting a second Python).
 *
 * Only the stable SPANK API is used and libslurm is not linked: the symbols resolve in the
 * host process (slurm_load_job is looked up with dlsym, and is optional).  plugstack.conf
 * arguments:
 *   config=/etc/slurm/qrmi_config.json  python=/usr/bin/python3  timeout=30
 *   state_dir=/var/lib/qrmi-slurm
 *
 * Helper protocol (one line each on the helper's stdout/stderr):
 *   "setenv KEY=VALUE"   export KEY to the job (spank_setenv, overwrite)
 *   "info MESSAGE"       slurm_info into slurmd's log
 *   "error MESSAGE"      slurm_error into slurmd's log, and the job's reason to fail
 *   "release-at-exit"    run "helper release" when this step's tasks have ended
 *   anything else        logged with slurm_info (e.g. a Python traceback)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

SPANK_PLUGIN(qrmi, 1);

#ifndef SLURM_BATCH_SCRIPT
#define SLURM_BATCH_SCRIPT (0xfffffffb)
#endif
#ifndef SLURM_EXTERN_CONT
#define SLURM_EXTERN_CONT (0xfffffffc)
#endif

#define QPU_MAX 1024
#define OUTPUT_MAX 65536
#define ERRORS_MAX 4096
#define LICENSES_MAX 4096
#define SRUN_MARKER "QRMI_SLURM_OWN_ALLOCATION"

static char *qpu_value;
static char deferred[ERRORS_MAX];
static int release_at_exit;
static int helper_missing; /* the helper's Python said: No module named 'qrmi' */

static const char *opt_config = "/etc/slurm/qrmi_config.json";
static const char *opt_python = "/usr/bin/python3";
static const char *opt_state_dir = "/var/lib/qrmi-slurm";
static int opt_timeout = 30;

static void defer(const char *message)
{
	size_t used = strlen(deferred);
	if (used && used + 1 < sizeof(deferred))
		deferred[used++] = '\n';
	snprintf(deferred + used, sizeof(deferred) - used, "%s", message);
}

/* Empty string when NAMES is a valid --qpu value, else why it is not. */
static const char *check_qpu(const char *names, char *why, size_t len)
{
	const char *p;
	int item = 0;

	why[0] = '\0';
	if (names == NULL || names[0] == '\0') {
		snprintf(why, len, "--qpu needs a comma separated list of QPU names, "
			 "e.g. --qpu=ibm_fez or --qpu=ibm_fez,ibm_torino");
		return why;
	}
	if (strlen(names) >= QPU_MAX) {
		snprintf(why, len, "--qpu list is longer than %d characters", QPU_MAX - 1);
		return why;
	}
	for (p = names; *p; p++) {
		if (*p == ',') {
			if (item == 0)
				break;
			item = 0;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			   (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-') {
			item++;
		} else {
			snprintf(why, len, "invalid character '%c' in --qpu=%s; QPU names contain "
				 "only letters, digits, '_', '.' and '-', separated by commas",
				 *p, names);
			return why;
		}
	}
	if (item == 0)
		snprintf(why, len, "empty QPU name in --qpu=%s; write names separated by single "
			 "commas, e.g. --qpu=ibm_fez,ibm_torino", names);
	return why;
}

static int qpu_option_cb(int val, const char *optarg, int remote)
{
	char why[QPU_MAX + 160];

	(void)val;
	if (check_qpu(optarg, why, sizeof(why))[0]) {
		if (!remote) {
			slurm_error("qrmi: %s", why);
			return -1;
		}
		defer(why);
		return 0;
	}
	free(qpu_value);
	qpu_value = strdup(optarg);
	return 0;
}

static struct spank_option qpu_option = {
	"qpu", "names", "Comma separated list of QPU resources to use.", 1, 0,
	(spank_opt_cb_f)qpu_option_cb
};

static void parse_args(int ac, char **av)
{
	int i;

	for (i = 0; i < ac; i++) {
		if (strncmp(av[i], "config=", 7) == 0)
			opt_config = av[i] + 7;
		else if (strncmp(av[i], "python=", 7) == 0)
			opt_python = av[i] + 7;
		else if (strncmp(av[i], "state_dir=", 10) == 0)
			opt_state_dir = av[i] + 10;
		else if (strncmp(av[i], "timeout=", 8) == 0 && atoi(av[i] + 8) > 0)
			opt_timeout = atoi(av[i] + 8);
		else
			slurm_error("qrmi: ignoring unknown plugstack.conf argument '%s' (known: "
				    "config=, python=, timeout=, state_dir=)", av[i]);
	}
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_context_t ctx = spank_context();

	if (ctx != S_CTX_ALLOCATOR && ctx != S_CTX_LOCAL && ctx != S_CTX_REMOTE)
		return 0;
	if (spank_option_register(sp, &qpu_option) != ESPANK_SUCCESS)
		slurm_error("qrmi: cannot register the --qpu option");
	if (ctx == S_CTX_REMOTE)
		parse_args(ac, av);
	return 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs ARGV with IN as stdin and OUT as stdout and stderr; LOCK_FD (if >= 0) becomes fd 3. */
static void child_exec(int in, int out, int lock_fd, char **argv)
{
	char slurm_conf[4096];
	const char *conf = getenv("SLURM_CONF");
	char *envp[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			 "LANG=C.UTF-8", NULL, NULL };
	sigset_t none;
	int fd, sig;

	/* slurmstepd's blocked and ignored signals would survive exec (the helper's alarm) */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	/* Slurm's SIGTERM to the job's processes at its end must not cut a release short;
	 * the helper's own deadline and our SIGKILL still bound it */
	signal(SIGTERM, SIG_IGN);
	if (conf && strlen(conf) < sizeof(slurm_conf) - 12) {
		snprintf(slurm_conf, sizeof(slurm_conf), "SLURM_CONF=%s", conf);
		envp[2] = slurm_conf;
	}
	setpgid(0, 0);
	dup2(in, STDIN_FILENO);
	dup2(out, STDOUT_FILENO);
	dup2(out, STDERR_FILENO);
	if (lock_fd == 3)
		fcntl(3, F_SETFD, 0); /* opened close-on-exec */
	else if (lock_fd >= 0 && dup2(lock_fd, 3) != 3)
		_exit(126);
	for (fd = lock_fd >= 0 ? 4 : 3; fd < 1024; fd++)
		close(fd);
	if (chdir("/") != 0)
		_exit(126);
	execve(argv[0], argv, envp);
	dprintf(STDOUT_FILENO, "error cannot run the QRMI helper %s: %s\n", argv[0],
		strerror(errno));
	_exit(127);
}

/*
 * Waits for PID until DEADLINE; kills its process group on expiry. Returns the exit status.
 * Called after the helper's output ended, when it is exiting: the first waits are short so
 * that the step does not start up to 2 ms late for nothing.
 */
static int reap(pid_t pid, double deadline, int *timed_out)
{
	int status = 0;
	useconds_t pause = 50;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR))
			break;
		if (now() > deadline) {
			*timed_out = 1;
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(pause);
		if (pause < 2000)
			pause *= 2;
	}
	kill(-pid, SIGKILL); /* stragglers the helper left behind */
	return status;
}

/* Reads the helper's output until EOF or DEADLINE. */
static size_t collect(int fd, char *out, size_t len, double deadline)
{
	size_t used = 0;

	while (used + 1 < len) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		int wait_ms = (int)((deadline - now()) * 1000);
		ssize_t n;

		if (wait_ms <= 0 || poll(&pfd, 1, wait_ms) <= 0)
			break;
		n = read(fd, out + used, len - used - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	out[used] = '\0';
	return used;
}

static void apply_line(spank_t sp, char *line, int import_env)
{
	if (strncmp(line, "setenv ", 7) == 0 && import_env) {
		char *eq = strchr(line + 7, '=');
		if (eq) {
			*eq = '\0';
			if (spank_setenv(sp, line + 7, eq + 1, 1) != ESPANK_SUCCESS)
				slurm_error("qrmi: cannot set %s in the job environment", line + 7);
		}
	} else if (strncmp(line, "info ", 5) == 0) {
		slurm_info("qrmi: %s", line + 5);
	} else if (strncmp(line, "error ", 6) == 0) {
		slurm_error("qrmi: %s", line + 6);
		defer(line + 6);
	} else if (strcmp(line, "release-at-exit") == 0) {
		release_at_exit = 1;
	} else if (line[0]) {
		if (strstr(line, "No module named 'qrmi"))
			helper_missing = 1;
		slurm_info("qrmi helper: %s", line);
	}
}

/*
 * Runs "python -I -m qrmi.slurm.helper EVENT ARGS..." until DEADLINE; returns 0 when it
 * succeeded.
 */
static int run_helper(spank_t sp, const char *event, char **args, int import_env,
		      double deadline)
{
	static char output[OUTPUT_MAX];
	char *argv[40] = { (char *)opt_python, "-I", "-m", "qrmi.slurm.helper", (char *)event };
	size_t argc = 5;
	int io[2], status, timed_out = 0, errors_before = deferred[0] != '\0';
	char *line, *save = NULL;
	pid_t pid;

	while (*args && argc < sizeof(argv) / sizeof(argv[0]) - 1)
		argv[argc++] = *args++;
	argv[argc] = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, io) != 0) {
		defer("qrmi: cannot create a socket pair for the QRMI helper");
		return -1;
	}
	pid = fork();
	if (pid == 0)
		child_exec(io[1], io[1], -1, argv);
	close(io[1]);
	if (pid < 0) {
		close(io[0]);
		defer("qrmi: cannot fork the QRMI helper");
		return -1;
	}
	setpgid(pid, pid);
	shutdown(io[0], SHUT_WR); /* the helper reads nothing from the job */
	collect(io[0], output, sizeof(output), deadline);
	close(io[0]);
	status = reap(pid, deadline, &timed_out);
	for (line = strtok_r(output, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		apply_line(sp, line, import_env);
	if (timed_out) {
		char why[256];
		snprintf(why, sizeof(why), "the QRMI helper (%s) did not finish within %d s and was "
			 "killed; the QPU backend may be hanging (plugstack.conf timeout=)", event,
			 opt_timeout);
		slurm_error("qrmi: %s", why);
		defer(why);
		return -1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (helper_missing && deferred[0] == '\0') {
		char why[4200];
		snprintf(why, sizeof(why), "qrmi: pyqrmi is not installed in python=%s (it cannot "
			 "import qrmi); install pyqrmi for that interpreter or point python= in "
			 "plugstack.conf at one that has it", opt_python);
		slurm_error("%s", why);
		defer(why);
		return -1;
	}
	if (!errors_before && deferred[0] == '\0')
		defer("qrmi: the QRMI helper failed without a message; see slurmd's log");
	return -1;
}

static void fmt_u32(char *buf, size_t len, uint32_t v)
{
	snprintf(buf, len, "%u", v);
}

typedef int (*load_job_fn)(job_info_msg_t **resp, uint32_t job_id, uint16_t show_flags);
typedef void (*free_job_fn)(job_info_msg_t *msg);

/* A field fit for the record line: no separator, no control character, at most max bytes. */
static int plain_field(const char *text, size_t max)
{
	size_t i;

	if (text == NULL)
		return 1;
	for (i = 0; text[i]; i++)
		if (i >= max || text[i] == '|' || (unsigned char)text[i] < 0x20)
			return 0;
	return 1;
}

/*
 * The job's record from slurmctld, in the form of squeue's "%l|%W|%S|%u|%a|%P|%v" that the
 * helper parses: time limit (minutes, UNLIMITED or NOT_SET), licenses, start time (local time,
 * as squeue prints it: it tells one run of a requeued job from the next), an empty user (the
 * helper names the uid itself), account and partition (for usage records), reservation (a
 * window declared with qrmi slurm reserve --dedicated gets the vendor's exclusive mode). One
 * RPC with slurmstepd's own libslurm instead of the helper starting squeue (a process that
 * loads libslurm and its plugins, on the step's critical path). Returns 0, or -1 when the answer is
 * not at hand (the symbols are missing, the RPC failed, a field does not fit): the helper then
 * asks squeue itself.
 */
static int load_job_record(uint32_t job_id, char *record, size_t record_len)
{
	load_job_fn load = (load_job_fn)dlsym(RTLD_DEFAULT, "slurm_load_job");
	free_job_fn release = (free_job_fn)dlsym(RTLD_DEFAULT, "slurm_free_job_info_msg");
	job_info_msg_t *msg = NULL;
	slurm_job_info_t *job = NULL;
	char limit[16], start[32] = "N/A";
	struct tm tm;
	uint32_t i;
	int rc = -1, written;

	if (load == NULL || release == NULL || load(&msg, job_id, SHOW_ALL) != 0 || msg == NULL)
		return -1;
	for (i = 0; i < msg->record_count && job == NULL; i++)
		if (msg->job_array[i].job_id == job_id)
			job = &msg->job_array[i];
	if (job != NULL && plain_field(job->licenses, LICENSES_MAX) &&
	    plain_field(job->account, 64) && plain_field(job->partition, 64) &&
	    plain_field(job->resv_name, 64)) {
		if (job->time_limit == INFINITE)
			snprintf(limit, sizeof(limit), "UNLIMITED");
		else if (job->time_limit == NO_VAL)
			snprintf(limit, sizeof(limit), "NOT_SET");
		else
			fmt_u32(limit, sizeof(limit), job->time_limit);
		if (job->start_time > 0 && localtime_r(&job->start_time, &tm) != NULL)
			strftime(start, sizeof(start), "%Y-%m-%dT%H:%M:%S", &tm);
		written = snprintf(record, record_len, "%s|%s|%s||%s|%s|%s", limit,
				   job->licenses ? job->licenses : "", start,
				   job->account ? job->account : "",
				   job->partition ? job->partition : "",
				   job->resv_name ? job->resv_name : "");
		rc = written > 0 && (size_t)written < record_len ? 0 : -1;
	}
	release(msg);
	return rc;
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	char job[16], step[16], uid_s[16], nodes[16], timeout[16], inherited[QPU_MAX], marker[8];
	char record[LICENSES_MAX + 320]; /* + limit, start, account, partition, reservation */
	char *args[28];
	uint32_t job_id = 0, step_id = 0, nnodes = 0;
	uid_t uid = 0;
	double deadline = now() + opt_timeout;
	int n = 0, inherits = 0, left;

	(void)ac;
	(void)av;
	if (spank_context() == S_CTX_LOCAL && qpu_value && getenv("SLURM_JOB_ID") == NULL)
		setenv(SRUN_MARKER, "1", 1); /* this srun creates its own allocation */
	if (!spank_remote(sp) || qpu_value == NULL || deferred[0])
		return 0;
	spank_get_item(sp, S_JOB_ID, &job_id);
	spank_get_item(sp, S_JOB_STEPID, &step_id);
	spank_get_item(sp, S_JOB_UID, &uid);
	spank_get_item(sp, S_JOB_NNODES, &nnodes);
	if (step_id == SLURM_EXTERN_CONT)
		return 0;
	if (step_id != SLURM_BATCH_SCRIPT &&
	    spank_getenv(sp, "QRMI_JOB_QPU_RESOURCES", inherited, sizeof(inherited)) ==
		    ESPANK_SUCCESS && strcmp(inherited, qpu_value) == 0)
		return 0; /* a step of a job whose batch step acquired: inherited */
	fmt_u32(job, sizeof(job), job_id);
	fmt_u32(uid_s, sizeof(uid_s), (uint32_t)uid);
	if (step_id == SLURM_BATCH_SCRIPT)
		snprintf(step, sizeof(step), "batch");
	else
		fmt_u32(step, sizeof(step), step_id);
	if (spank_getenv(sp, "SLURM_JOB_NUM_NODES", nodes, sizeof(nodes)) != ESPANK_SUCCESS)
		fmt_u32(nodes, sizeof(nodes), nnodes);
	args[n++] = "--config";    args[n++] = (char *)opt_config;
	args[n++] = "--state-dir"; args[n++] = (char *)opt_state_dir;
	args[n++] = "--job";       args[n++] = job;
	args[n++] = "--step";      args[n++] = step;
	args[n++] = "--uid";       args[n++] = uid_s;
	args[n++] = "--job-nodes"; args[n++] = nodes;
	args[n++] = "--qpu";       args[n++] = qpu_value;
	args[n++] = "--timeout";   args[n++] = timeout;
	if (spank_getenv(sp, "QRMI_JOB_QPU_RESOURCES", inherited, sizeof(inherited)) ==
	    ESPANK_SUCCESS) {
		args[n++] = "--inherited";
		args[n++] = inherited;
		inherits = step_id != SLURM_BATCH_SCRIPT; /* the helper acquires nothing */
	}
	if (spank_getenv(sp, SRUN_MARKER, marker, sizeof(marker)) == ESPANK_SUCCESS)
		args[n++] = "--own-allocation";
	if (!inherits &&
	    load_job_record(job_id, record, sizeof(record)) == 0) {
		args[n++] = "--job-record"; args[n++] = record;
	}
	args[n] = NULL;
	/* the RPC's time counts against timeout= too (the step never waits longer for us), and
	 * the helper learns what is left, so that its own deadline still comes before our kill */
	left = (int)(deadline - now() + 0.5);
	snprintf(timeout, sizeof(timeout), "%d", left > 0 ? left : 1);
	run_helper(sp, "acquire", args, 1, deadline);
	return 0; /* never fail here: it would drain the node (see slurm_spank_task_init) */
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	char *save = NULL, *line;

	(void)sp;
	(void)ac;
	(void)av;
	if (deferred[0] == '\0')
		return 0;
	for (line = strtok_r(deferred, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		slurm_error("%s", line);
	deferred[0] = '\0';
	return -1;
}

static void on_lock_alarm(int sig)
{
	(void)sig; /* interrupts flock() */
}

/*
 * Takes the job's lock (<state_dir>/jobs/<job>.lock, left by the acquisition) for the release
 * about to start, so that the Epilog, which waits for that lock, does not start a second
 * Python meanwhile. Waits at most the helper's timeout; returns the locked fd, or -1 (no lock
 * file: nothing to release; or no lock in time: the helper then locks by itself).
 */
static int take_job_lock(const char *job)
{
	char path[4096];
	struct sigaction quiet = { 0 };
	int fd, locked;

	snprintf(path, sizeof(path), "%s/jobs/%s.lock", opt_state_dir, job);
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	quiet.sa_handler = on_lock_alarm; /* no SA_RESTART: the alarm ends the wait */
	sigaction(SIGALRM, &quiet, NULL);
	alarm((unsigned int)opt_timeout);
	locked = flock(fd, LOCK_EX) == 0;
	alarm(0);
	if (!locked) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Runs "helper release" once, detached: neither the step nor srun waits for it, and it is
 * re-parented to init so Slurm's clean-up of the step's processes does not cut it short (with
 * proctrack/cgroup it may; then the Epilog releases). It holds the job's lock from before
 * Python starts (passed as fd 3). Messages go to <state_dir>/helper.log.
 */
static void release_now(spank_t sp)
{
	char job[16], timeout[16], kill_after[16], log_path[4096];
	char *argv[] = { "/usr/bin/timeout", "-s", "KILL", kill_after, (char *)opt_python, "-I",
			 "-m", "qrmi.slurm.helper", "release", "--config", (char *)opt_config,
			 "--state-dir", (char *)opt_state_dir, "--job", job, "--timeout", timeout,
			 "--log", NULL, NULL, NULL };
	size_t last = sizeof(argv) / sizeof(argv[0]) - 3;
	char **run = argv;
	uint32_t job_id = 0;
	pid_t pid;
	int in, out, lock_fd;

	release_at_exit = 0;
	spank_get_item(sp, S_JOB_ID, &job_id);
	fmt_u32(job, sizeof(job), job_id);
	snprintf(timeout, sizeof(timeout), "%d", opt_timeout);
	snprintf(kill_after, sizeof(kill_after), "%d", opt_timeout + 5);
	snprintf(log_path, sizeof(log_path), "%s/helper.log", opt_state_dir);
	if (access(argv[0], X_OK) != 0)
		run = argv + 4;
	pid = fork();
	if (pid < 0) {
		slurm_error("qrmi: cannot fork to release job %s; the Epilog will release it", job);
		return;
	}
	if (pid == 0) {
		/* locked before the step goes on, hence before the job's Epilog looks */
		lock_fd = take_job_lock(job);
		if (fork() != 0)
			_exit(0);
		setsid();
		/* not urgent: the next job's acquisition (often on this node) goes first */
		setpriority(PRIO_PROCESS, 0, 10); /* best effort */
		in = open("/dev/null", O_RDONLY);
		out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (lock_fd >= 0) {
			argv[last] = "--lock-fd";
			argv[last + 1] = "3";
		}
		child_exec(in, out < 0 ? in : out, lock_fd, run);
	}
	waitpid(pid, NULL, 0);
}

/*
 * Release when the step's last local task has exited: that is before Slurm starts killing
 * the job's processes at its end (which would also hit a helper started in slurm_spank_exit).
 * A step that releases runs on one node (batch step, or a one-node srun allocation).
 */
int slurm_spank_task_exit(spank_t sp, int ac, char **av)
{
	static uint32_t exited;
	uint32_t local = 0;

	(void)ac;
	(void)av;
	if (!spank_remote(sp) || !release_at_exit)
		return 0;
	spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &local);
	if (++exited >= local)
		release_now(sp);
	return 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (spank_remote(sp) && release_at_exit)
		release_now(sp); /* no task ran (e.g. another plugin failed task_init) */
	free(qpu_value);
	qpu_value = NULL;
	return 0;
}
