/*
 * erofs-snapshotter from C: the life of two layers and a view.
 *
 *   prepare -> write files into the mounted active snapshot -> commit
 *   prepare on top -> change and delete files -> commit
 *   view -> mount -> read the files back -> remove everything
 *
 * Usage (as root): example [ROOT]   (default: a new directory under /tmp)
 * Build: see the Makefile (`make run`), or
 *   cc -Wall -Wextra -Werror -Iinclude examples/c/example.c \
 *      -Ltarget/release -lerofs_snapshotter -Wl,-rpath,$PWD/target/release
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "erofs_snapshotter.h"

/* Prints the failed call, its status and the library's message, then exits. */
static void check(int32_t rc, char *err, const char *what)
{
    if (rc == EROFS_OK)
        return;
    fprintf(stderr, "example: %s failed (status %d): %s\n", what, rc, err ? err : "(no message)");
    erofs_snapshotter_string_free(err);
    exit(1);
}

/* Warnings (e.g. a failed IMMUTABLE_FL) arrive here, from any thread. */
static void on_log(void *user_data, int32_t level, const char *message)
{
    (void)user_data;
    fprintf(stderr, "[erofs-snapshotter %s] %s\n", level <= EROFS_LOG_WARN ? "warn" : "info", message);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(content, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "example: write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void remove_file(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (unlink(path) != 0) {
        fprintf(stderr, "example: unlink %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void print_file(const char *dir, const char *name)
{
    char path[4096], buf[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("  %-16s (absent: %s)\n", name, strerror(errno));
        return;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    printf("  %-16s %s", name, buf);
}

/* Mounts what the snapshotter returned on `target`, runs nothing else. */
static void mount_on(const char *mounts_json, const char *target)
{
    char *err = NULL;
    if (mkdir(target, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "example: mkdir %s: %s\n", target, strerror(errno));
        exit(1);
    }
    check(erofs_snapshotter_mount_all(mounts_json, target, &err), err, "mount_all");
}

static void unmount(const char *target)
{
    char *err = NULL;
    check(erofs_snapshotter_unmount_all(target, 0, &err), err, "unmount_all");
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/erofs-example-XXXXXX";
    char root[4096], mnt[4096], config[8192];
    char *err = NULL, *mounts = NULL, *info = NULL;
    erofs_snapshotter *s = NULL;
    int own_dir = argc < 2;

    if (own_dir && !mkdtemp(tmp)) {
        perror("example: mkdtemp");
        return 1;
    }
    snprintf(root, sizeof root, "%s/root", own_dir ? tmp : argv[1]);
    snprintf(mnt, sizeof mnt, "%s/mnt", own_dir ? tmp : argv[1]);
    snprintf(config, sizeof config, "{\"root\": \"%s\"}", root);

    printf("erofs-snapshotter %s, root %s\n", erofs_snapshotter_version(), root);
    check(erofs_snapshotter_open_with_logger(config, on_log, NULL, EROFS_LOG_WARN, &s, &err), err, "open");

    /* Layer 1: an active snapshot with no parent is a bind mount of its upper dir. */
    check(erofs_snapshotter_prepare(s, "layer1-active", NULL, "{\"example\": \"yes\"}", &mounts, &err), err,
          "prepare layer1");
    printf("prepare layer1-active mounts: %s\n", mounts);
    mount_on(mounts, mnt);
    erofs_snapshotter_string_free(mounts);
    write_file(mnt, "hello.txt", "hello from layer 1\n");
    write_file(mnt, "doomed.txt", "deleted in layer 2\n");
    unmount(mnt);
    check(erofs_snapshotter_commit(s, "layer1", "layer1-active", NULL, &err), err, "commit layer1");

    /* Layer 2: an overlay over layer 1's EROFS image. */
    check(erofs_snapshotter_prepare(s, "layer2-active", "layer1", NULL, &mounts, &err), err, "prepare layer2");
    printf("prepare layer2-active mounts: %s\n", mounts);
    mount_on(mounts, mnt);
    erofs_snapshotter_string_free(mounts);
    write_file(mnt, "layer2.txt", "hello from layer 2\n");
    remove_file(mnt, "doomed.txt"); /* overlayfs records a whiteout */
    unmount(mnt);
    check(erofs_snapshotter_commit(s, "layer2", "layer2-active", "{\"stage\": \"final\"}", &err), err,
          "commit layer2");

    check(erofs_snapshotter_stat(s, "layer2", &info, &err), err, "stat layer2");
    printf("stat layer2: %s\n", info);
    erofs_snapshotter_string_free(info);

    /* A read-only view of both layers, read back from the committed images. */
    check(erofs_snapshotter_view(s, "view", "layer2", NULL, &mounts, &err), err, "view");
    printf("view mounts: %s\n", mounts);
    mount_on(mounts, mnt);
    erofs_snapshotter_string_free(mounts);
    printf("read back from the committed layers:\n");
    print_file(mnt, "hello.txt");
    print_file(mnt, "layer2.txt");
    print_file(mnt, "doomed.txt");
    unmount(mnt);

    int64_t size = 0, inodes = 0;
    check(erofs_snapshotter_usage(s, "layer1", &size, &inodes, &err), err, "usage");
    printf("layer1 uses %lld bytes\n", (long long)size);

    check(erofs_snapshotter_remove(s, "view", &err), err, "remove view");
    check(erofs_snapshotter_remove(s, "layer2", &err), err, "remove layer2");
    check(erofs_snapshotter_remove(s, "layer1", &err), err, "remove layer1");
    check(erofs_snapshotter_cleanup(s, &err), err, "cleanup");
    erofs_snapshotter_close(s);

    if (own_dir) {
        /* Only the snapshotter's own small files are left: remove the tree. */
        if (nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
            perror("example: cleanup");
    }
    printf("done\n");
    return 0;
}
