/* cgroup: /proc/PID/cgroup texts as the runtimes write them (cgroup v1 and v2; containerd, CRI-O,
 * Docker, Podman; kubepods with the cgroupfs and systemd drivers; a private cgroup namespace),
 * processes that are not containers (host sessions, conmon monitors), garbage and the bounds, and
 * the live file of this process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cgroup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ID64 "3f9a0e7c1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2a3b"
#define ID64B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define UID "8a5e4b2c-1f3d-4e5a-9b6c-7d8e9f0a1b2c"
#define UID_ "8a5e4b2c_1f3d_4e5a_9b6c_7d8e9f0a1b2c"

static struct cgroup_info parse(const char *text)
{
    struct cgroup_info info;
    cgroup_parse(text, strlen(text), &info);
    return info;
}

static void expect(const char *text, const char *runtime, const char *id, const char *pod,
                   const char *path)
{
    struct cgroup_info info = parse(text);
    assert_string_equal(info.runtime, runtime);
    assert_string_equal(info.container_id, id);
    assert_string_equal(info.pod_uid, pod);
    assert_string_equal(info.path, path);
    assert_int_equal(cgroup_in_container(&info), id[0] != '\0');
}

static void test_containerd_systemd_v2(void **state)
{
    (void)state;
    const char *path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UID_
                       ".slice/cri-containerd-" ID64 ".scope";
    char text[512];
    snprintf(text, sizeof text, "0::%s\n", path);
    expect(text, "containerd", ID64, UID, path);
}

static void test_containerd_systemd_v1(void **state)
{
    (void)state;
    const char *p = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UID_
                    ".slice/cri-containerd-" ID64 ".scope";
    char text[4096];
    snprintf(text, sizeof text,
             "12:hugetlb:%s\n11:memory:%s\n10:devices:%s\n9:pids:%s\n8:blkio:%s\n"
             "7:net_cls,net_prio:%s\n6:freezer:%s\n5:perf_event:%s\n4:cpu,cpuacct:%s\n"
             "3:cpuset:%s\n2:rdma:/\n1:name=systemd:%s\n0::/\n",
             p, p, p, p, p, p, p, p, p, p, p);
    expect(text, "containerd", ID64, UID, p);
}

static void test_guaranteed_pod_systemd(void **state)
{
    (void)state;
    expect("0::/kubepods.slice/kubepods-pod" UID_ ".slice/cri-containerd-" ID64 ".scope\n",
           "containerd", ID64, UID,
           "/kubepods.slice/kubepods-pod" UID_ ".slice/cri-containerd-" ID64 ".scope");
}

static void test_crio(void **state)
{
    (void)state;
    expect("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UID_
           ".slice/crio-" ID64 ".scope\n",
           "cri-o", ID64, UID,
           "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UID_
           ".slice/crio-" ID64 ".scope");
    /* CRI-O with the cgroupfs driver */
    expect("4:cpu,cpuacct:/kubepods/burstable/pod" UID "/crio-" ID64 "\n", "cri-o", ID64, UID,
           "/kubepods/burstable/pod" UID "/crio-" ID64);
}

static void test_crio_conmon_is_not_a_container(void **state)
{
    (void)state;
    const char *p = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UID_
                    ".slice/crio-conmon-" ID64 ".scope";
    char text[512];
    snprintf(text, sizeof text, "0::%s\n", p);
    expect(text, "", "", "", p);
    expect("1:name=systemd:/kubepods/burstable/pod" UID "/crio-conmon-" ID64 "\n", "", "", "",
           "/kubepods/burstable/pod" UID "/crio-conmon-" ID64);
}

static void test_docker_systemd_and_cgroupfs(void **state)
{
    (void)state;
    expect("0::/system.slice/docker-" ID64 ".scope\n", "docker", ID64, "",
           "/system.slice/docker-" ID64 ".scope");
    expect("13:misc:/\n12:pids:/docker/" ID64 "\n11:memory:/docker/" ID64
           "\n4:cpu,cpuacct:/docker/" ID64 "\n1:name=systemd:/docker/" ID64 "\n0::/\n",
           "docker", ID64, "", "/docker/" ID64);
    /* systemd running inside the container moves itself to a sub-cgroup */
    expect("0::/system.slice/docker-" ID64 ".scope/init.scope\n", "docker", ID64, "",
           "/system.slice/docker-" ID64 ".scope/init.scope");
    /* docker in docker: the innermost container */
    expect("0::/docker/" ID64 "/docker/" ID64B "\n", "docker", ID64B, "",
           "/docker/" ID64 "/docker/" ID64B);
    /* Kubernetes with dockershim / cri-dockerd and the systemd driver */
    expect("1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UID_
           ".slice/docker-" ID64 ".scope\n",
           "docker", ID64, UID,
           "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UID_
           ".slice/docker-" ID64 ".scope");
}

static void test_podman(void **state)
{
    (void)state;
    const char *p =
        "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" ID64 ".scope/container";
    char text[512];
    snprintf(text, sizeof text, "0::%s\n", p);
    expect(text, "podman", ID64, "", p);
    expect("0::/machine.slice/libpod-conmon-" ID64 ".scope\n", "", "", "",
           "/machine.slice/libpod-conmon-" ID64 ".scope");
    expect("4:cpu:/libpod_parent/libpod-" ID64 "\n", "podman", ID64, "",
           "/libpod_parent/libpod-" ID64);
}

static void test_kubepods_cgroupfs(void **state)
{
    (void)state;
    expect("11:cpu,cpuacct:/kubepods/burstable/pod" UID "/" ID64 "\n1:name=systemd:/kubepods/"
           "burstable/pod" UID "/" ID64 "\n",
           "", ID64, UID, "/kubepods/burstable/pod" UID "/" ID64);
    expect("1:name=systemd:/kubepods/pod" UID "/" ID64 "\n", "", ID64, UID,
           "/kubepods/pod" UID "/" ID64);
    expect("0::/kubepods/besteffort/pod" UID "/" ID64 "\n", "", ID64, UID,
           "/kubepods/besteffort/pod" UID "/" ID64);
    /* a static pod: its UID is the manifest's hash, 32 hex digits */
    expect("0::/kubepods/burstable/pod3b8d2f5ba1d0e4b2e19a6eae4e6d3e1c/" ID64 "\n", "", ID64,
           "3b8d2f5ba1d0e4b2e19a6eae4e6d3e1c",
           "/kubepods/burstable/pod3b8d2f5ba1d0e4b2e19a6eae4e6d3e1c/" ID64);
    /* the pod cgroup itself holds no container */
    expect("0::/kubepods/burstable/pod" UID "\n", "", "", "", "/kubepods/burstable/pod" UID);
}

static void test_nested_kubelet_and_private_cgroupns(void **state)
{
    (void)state;
    /* kind: a kubelet in a container, systemd driver, everything under kubelet.slice */
    expect("0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
           "kubelet-kubepods-besteffort-pod" UID_ ".slice/cri-containerd-" ID64 ".scope\n",
           "containerd", ID64, UID,
           "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
           "kubelet-kubepods-besteffort-pod" UID_ ".slice/cri-containerd-" ID64 ".scope");
    /* a reader in its own cgroup namespace sees paths relative to its own cgroup */
    expect("0::/../../kubepods-burstable-pod" UID_ ".slice/cri-containerd-" ID64 ".scope\n",
           "containerd", ID64, UID,
           "/../../kubepods-burstable-pod" UID_ ".slice/cri-containerd-" ID64 ".scope");
}

static void test_host_processes(void **state)
{
    (void)state;
    expect("0::/user.slice/user-0.slice/session-3.scope\n", "", "", "",
           "/user.slice/user-0.slice/session-3.scope");
    expect("0::/init.scope\n", "", "", "", "/init.scope");
    expect("0::/system.slice/containerd.service\n", "", "", "", "/system.slice/containerd.service");
    expect("0::/system.slice/docker.service\n", "", "", "", "/system.slice/docker.service");
    /* v1 + v2 hybrid as on this machine: a memory-only path does not count */
    expect("9:name=systemd:/\n4:memory:/process_api/34c28955c3e6bab7c4dbbe82a5820c61\n1:cpu:/\n"
           "0::/\n",
           "", "", "", "/");
    /* "pod..." outside kubepods is no pod; a short /docker/ name is no container */
    expect("0::/srv/pod" UID "/" ID64 "\n", "", "", "", "/srv/pod" UID "/" ID64);
    expect("0::/docker/buildkit\n", "", "", "", "/docker/buildkit");
    expect("0::/system.slice/docker-compose@web.service\n", "", "", "",
           "/system.slice/docker-compose@web.service");
    /* no v2 line: the name=systemd path, then the cpu one */
    expect("3:cpu,cpuacct:/a\n1:name=systemd:/b\n", "", "", "", "/b");
    expect("3:cpu,cpuacct:/a\n2:cpuset:/c\n", "", "", "", "/a");
    expect("", "", "", "", "");
}

static void test_v2_line_wins_over_v1(void **state)
{
    (void)state;
    /* hybrid: both name a container; the v2 line is looked at first */
    expect("1:name=systemd:/docker/" ID64 "\n0::/system.slice/docker-" ID64B ".scope\n", "docker",
           ID64B, "", "/system.slice/docker-" ID64B ".scope");
    /* a v2 line without a container does not hide a v1 line with one */
    expect("0::/\n1:name=systemd:/docker/" ID64 "\n", "docker", ID64, "", "/docker/" ID64);
}

static void test_ids_as_given(void **state)
{
    (void)state;
    /* ids that are not 64 hex digits are taken as given in .scope names and under pods */
    expect("0::/system.slice/cri-containerd-my-ctr_1.scope\n", "containerd", "my-ctr_1", "",
           "/system.slice/cri-containerd-my-ctr_1.scope");
    expect("0::/kubepods/besteffort/pod" UID "/abc\n", "", "abc", UID,
           "/kubepods/besteffort/pod" UID "/abc");
    /* but not without .scope, nor with characters that are not id characters */
    expect("0::/system.slice/crio-zzz\n", "", "", "", "/system.slice/crio-zzz");
    expect("0::/system.slice/docker-a b.scope\n", "", "", "", "/system.slice/docker-a b.scope");
    expect("0::/system.slice/docker-.scope\n", "", "", "", "/system.slice/docker-.scope");
}

static void test_garbage_lines(void **state)
{
    (void)state;
    expect("no colons here\n::\nx:cpu:/docker/" ID64 "\n12345678901:cpu:/docker/" ID64
           "\n:cpu:/docker/" ID64 "\n0::/ok\n",
           "", "", "", "/ok");
    /* a NUL inside a line makes it malformed */
    char text[256];
    int n = snprintf(text, sizeof text, "0::/docker/%s\n", ID64);
    text[5] = '\0';
    struct cgroup_info info;
    cgroup_parse(text, (size_t)n, &info);
    assert_false(cgroup_in_container(&info));
    /* a last line without its newline still counts */
    expect("0::/docker/" ID64, "docker", ID64, "", "/docker/" ID64);
    /* a path too deep to be a container path */
    char deep[4096] = "0::";
    for (int i = 0; i < 200; i++)
        strcat(deep, "/a");
    strcat(deep, "/docker-" ID64 ".scope\n");
    info = parse(deep);
    assert_false(cgroup_in_container(&info));
}

static void test_line_bound(void **state)
{
    (void)state;
    /* lines of CGROUP_LINE_MAX bytes or more are skipped; one byte less is kept */
    const char *tail = "/docker-" ID64 ".scope";
    char *text = malloc(2 * CGROUP_LINE_MAX);
    assert_non_null(text);
    for (size_t total = CGROUP_LINE_MAX - 1; total <= CGROUP_LINE_MAX; total++) {
        size_t pad = total - strlen("0::") - strlen(tail);
        strcpy(text, "0::/");
        memset(text + 4, 'x', pad - 1);
        strcpy(text + 3 + pad, tail);
        assert_int_equal(strlen(text), total);
        strcat(text, "\n");
        struct cgroup_info info = parse(text);
        assert_int_equal(cgroup_in_container(&info), total < CGROUP_LINE_MAX);
    }
    free(text);
}

static void test_text_bound(void **state)
{
    (void)state;
    /* filler lines up to the 64 KiB bound, then a container line: past the bound, not seen */
    size_t size = CGROUP_TEXT_MAX + 256;
    char *text = malloc(size);
    assert_non_null(text);
    const char *line = "2:cpuset:/\n";
    size_t len = 0;
    while (len + strlen(line) <= CGROUP_TEXT_MAX - 20)
        len += (size_t)sprintf(text + len, "%s", line);
    size_t before = len;
    len += (size_t)sprintf(text + len, "0::/docker/%s\n", ID64);
    struct cgroup_info info;
    cgroup_parse(text, len, &info);
    assert_false(cgroup_in_container(&info)); /* cut by the bound */
    /* the same line fully inside the bound is seen */
    len = before - 100;
    len -= len % strlen(line);
    len += (size_t)sprintf(text + len, "0::/docker/%s\n", ID64);
    cgroup_parse(text, len, &info);
    assert_true(cgroup_in_container(&info));
    free(text);
}

static void test_live_process(void **state)
{
    (void)state;
    struct cgroup_info info;
    struct cp_err err;
    assert_int_equal(cgroup_read(-1, getpid(), &info, &err), 0);
    /* what the kernel says about us must be what we parsed */
    FILE *f = fopen("/proc/self/cgroup", "r");
    assert_non_null(f);
    char line[CGROUP_LINE_MAX];
    bool seen = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "0::", 3) == 0 && !cgroup_in_container(&info)) {
            assert_string_equal(info.path, line + 3);
            seen = true;
        }
    }
    fclose(f);
    assert_true(seen || info.path[0] != '\0');
    assert_int_equal(cgroup_read(-1, 999999999, &info, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOPROC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_containerd_systemd_v2),
        cmocka_unit_test(test_containerd_systemd_v1),
        cmocka_unit_test(test_guaranteed_pod_systemd),
        cmocka_unit_test(test_crio),
        cmocka_unit_test(test_crio_conmon_is_not_a_container),
        cmocka_unit_test(test_docker_systemd_and_cgroupfs),
        cmocka_unit_test(test_podman),
        cmocka_unit_test(test_kubepods_cgroupfs),
        cmocka_unit_test(test_nested_kubelet_and_private_cgroupns),
        cmocka_unit_test(test_host_processes),
        cmocka_unit_test(test_v2_line_wins_over_v1),
        cmocka_unit_test(test_ids_as_given),
        cmocka_unit_test(test_garbage_lines),
        cmocka_unit_test(test_line_bound),
        cmocka_unit_test(test_text_bound),
        cmocka_unit_test(test_live_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
