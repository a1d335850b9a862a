/* A power cut for one SQLite database, loaded into a controller with LD_PRELOAD (bench and tests only).
 *
 * SIGKILL keeps the page cache: every write a process made survives it, synced or not, so killing a
 * process never tests what was really on disk. This library keeps, for every file whose path starts with
 * $VEND_POWERCUT_PREFIX (the ledger, its WAL and journal; not the -shm index, which SQLite rebuilds), a
 * shadow copy in $VEND_POWERCUT_SHADOW holding exactly what the last fsync/fdatasync made durable: writes
 * are remembered as dirty ranges and copied into the shadow only when the file is synced. "The power goes"
 * is then: SIGKILL the process and copy each shadow back over its file (bench/chaos.py does that), which
 * loses every write that was not synced, as the disk would.
 *
 * It interposes the libc calls SQLite's unix VFS makes (write, pwrite, pwrite64, fsync, fdatasync, unlink),
 * so the controller runs unchanged: the stdlib sqlite3 module and sqlite-utils never know. (An APSW VFS
 * cannot do this here: APSW's wheel carries its own SQLite, and a VFS registered there is never seen by
 * the stdlib sqlite3 the ledger uses.) Without the two environment variables it does nothing.
 * Never for a machine in the field: it exists to test, and it slows every write down.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*sync_fn)(int);
typedef int (*unlink_fn)(const char *);

static write_fn real_write;
static pwrite_fn real_pwrite, real_pwrite64;
static sync_fn real_fsync, real_fdatasync;
static unlink_fn real_unlink;
static const char *prefix, *shadow_dir;
static size_t prefix_len;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct range { off_t off; size_t len; };
struct tracked {
    char path[PATH_MAX];
    int used;
    struct range *dirty;
    size_t n, cap;
};
#define MAX_FILES 16
static struct tracked files[MAX_FILES];

__attribute__((constructor)) static void setup(void) {
    real_write = (write_fn)dlsym(RTLD_NEXT, "write");
    real_pwrite = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite64");
    real_fsync = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    real_unlink = (unlink_fn)dlsym(RTLD_NEXT, "unlink");
    prefix = getenv("VEND_POWERCUT_PREFIX");
    shadow_dir = getenv("VEND_POWERCUT_SHADOW");
    if (prefix && shadow_dir && *prefix && *shadow_dir)
        prefix_len = strlen(prefix);
    else
        prefix = NULL;
}

static int watched_path(const char *path) {
    size_t n = strlen(path);
    return prefix && strncmp(path, prefix, prefix_len) == 0 && !(n >= 4 && strcmp(path + n - 4, "-shm") == 0);
}

static int path_of(int fd, char *out) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n <= 0) return 0;
    out[n] = 0;
    return 1;
}

static void shadow_of(const char *path, char *out) {
    const char *base = strrchr(path, '/');
    snprintf(out, PATH_MAX, "%s/%s", shadow_dir, base ? base + 1 : path);
}

static void die(const char *what, const char *path) {
    /* A shadow that cannot be kept would make the power cut lie: stop loudly instead. */
    fprintf(stderr, "powercut: %s %s: %s\n", what, path, strerror(errno));
    abort();
}

static void copy_range(int from, int to, off_t off, size_t len, const char *path) {
    char buf[65536];
    while (len > 0) {
        size_t want = len < sizeof buf ? len : sizeof buf;
        ssize_t got = pread(from, buf, want, off);
        if (got < 0) die("read", path);
        if (got == 0) break;
        if (real_pwrite(to, buf, (size_t)got, off) != got) die("write shadow of", path);
        off += got;
        len -= (size_t)got;
    }
}

/* The file's state, made on first sight: its shadow starts as a copy of the file as it is now, before this
 * process has written to it (what was there when the process started counts as durable). */
static struct tracked *tracked_of(const char *path) {
    for (int i = 0; i < MAX_FILES; i++)
        if (files[i].used && strcmp(files[i].path, path) == 0) return &files[i];
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i].used) continue;
        struct tracked *t = &files[i];
        memset(t, 0, sizeof *t);
        t->used = 1;
        snprintf(t->path, PATH_MAX, "%s", path);
        char shadow[PATH_MAX];
        shadow_of(path, shadow);
        int src = open(path, O_RDONLY | O_CLOEXEC);
        int dst = open(shadow, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (dst < 0) die("create shadow of", path);
        if (src >= 0) {
            struct stat st;
            if (fstat(src, &st) == 0) copy_range(src, dst, 0, (size_t)st.st_size, path);
            close(src);
        }
        close(dst);
        return t;
    }
    errno = EMFILE;
    die("too many files under", prefix);
    return NULL;
}

static void remember(int fd, off_t off, size_t len) {
    char path[PATH_MAX];
    if (!prefix || len == 0 || !path_of(fd, path) || !watched_path(path)) return;
    pthread_mutex_lock(&lock);
    struct tracked *t = tracked_of(path);
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->dirty = realloc(t->dirty, t->cap * sizeof *t->dirty);
        if (!t->dirty) die("remember a write to", path);
    }
    t->dirty[t->n++] = (struct range){off, len};
    pthread_mutex_unlock(&lock);
}

/* The file was synced: what it holds now (its size, and each range written since the last sync) is
 * durable, so the shadow becomes the same. */
static void synced(int fd) {
    char path[PATH_MAX], shadow[PATH_MAX];
    if (!prefix || !path_of(fd, path) || !watched_path(path)) return;
    pthread_mutex_lock(&lock);
    struct tracked *t = tracked_of(path);
    shadow_of(path, shadow);
    int dst = open(shadow, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (dst < 0 || fstat(fd, &st) != 0) die("sync shadow of", path);
    if (ftruncate(dst, st.st_size) != 0) die("size shadow of", path);
    int src = open(path, O_RDONLY | O_CLOEXEC);
    if (src < 0) die("reopen", path);
    for (size_t i = 0; i < t->n; i++) copy_range(src, dst, t->dirty[i].off, t->dirty[i].len, path);
    t->n = 0;
    close(src);
    close(dst);
    pthread_mutex_unlock(&lock);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    remember(fd, off, len);
    return real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
    remember(fd, off, len);
    return real_pwrite64(fd, buf, len, off);
}

ssize_t write(int fd, const void *buf, size_t len) {
    if (prefix) {
        off_t off = lseek(fd, 0, SEEK_CUR);
        if (off >= 0) remember(fd, off, len);
    }
    return real_write(fd, buf, len);
}

int fsync(int fd) {
    int rc = real_fsync(fd);
    if (rc == 0) synced(fd);
    return rc;
}

int fdatasync(int fd) {
    int rc = real_fdatasync(fd);
    if (rc == 0) synced(fd);
    return rc;
}

/* SQLite removes its WAL on a clean close: the file and its shadow go together. */
int unlink(const char *path) {
    int rc = real_unlink(path);
    char full[PATH_MAX], shadow[PATH_MAX];
    if (rc == 0 && prefix && realpath(".", full)) {
        if (path[0] == '/') snprintf(full, PATH_MAX, "%s", path);
        else { size_t n = strlen(full); snprintf(full + n, PATH_MAX - n, "/%s", path); }
        if (watched_path(full)) {
            pthread_mutex_lock(&lock);
            for (int i = 0; i < MAX_FILES; i++)
                if (files[i].used && strcmp(files[i].path, full) == 0) { free(files[i].dirty); files[i].used = 0; }
            shadow_of(full, shadow);
            real_unlink(shadow);
            pthread_mutex_unlock(&lock);
        }
    }
    return rc;
}
