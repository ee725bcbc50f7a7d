// edu_smoke: proves the VM facts the real-kernel tests rely on, with no project code.
//
//   edu_smoke type1   [BDF...]   legacy VFIO: /dev/vfio/vfio + /dev/vfio/GROUP, TYPE1v2
//   edu_smoke iommufd [BDF...]   /dev/iommu + /dev/vfio/devices/vfioN (cdev), an IOAS
//
// With no BDF every QEMU edu device (1234:11e8) found in sysfs is tested, one after the
// other, each in its own container / IOAS. For each device:
//   1. map two pages of anonymous memory at IOVA 0x100000 (src) and 0x101000 (dst);
//   2. enable memory decoding + bus mastering through the VFIO config region;
//   3. check the edu's identification and liveness registers through BAR0;
//   4. DMA 4095 bytes src -> device buffer -> dst and compare (dst[4095] must stay put);
//   5. unmap, then DMA device -> dst again and show that no byte of dst changed, and DMA
//      src -> device and show that the new src pattern did not reach the device.
// Prints "edu_smoke: PASS ..." and exits 0, or "edu_smoke: FAIL ..." and exits 1.
//
// Built with `gcc -static -O2 -Wall -o edu_smoke edu_smoke.c` (tests/vm/smoke.sh does it).
// Debian 12's linux-libc-dev (6.1) has no iommufd uapi, so the few structs are declared here.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

// ---- iommufd uapi (include/uapi/linux/iommufd.h, vfio.h of Linux 6.12) ----------------
#define IOMMUFD_TYPE (';')
#define IOMMU_DESTROY_ _IO(IOMMUFD_TYPE, 0x80)
#define IOMMU_IOAS_ALLOC_ _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_IOVA_RANGES_ _IO(IOMMUFD_TYPE, 0x84)
#define IOMMU_IOAS_MAP_ _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_UNMAP_ _IO(IOMMUFD_TYPE, 0x86)
#define VFIO_DEVICE_BIND_IOMMUFD_ _IO(VFIO_TYPE, VFIO_BASE + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT_ _IO(VFIO_TYPE, VFIO_BASE + 19)
struct iommu_destroy_ { uint32_t size, id; };
struct iommu_ioas_alloc_ { uint32_t size, flags, out_ioas_id; };
struct iommu_iova_range_ { uint64_t start, last; };
struct iommu_ioas_iova_ranges_ {
  uint32_t size, ioas_id, num_iovas, reserved;
  uint64_t allowed_iovas, out_iova_alignment;
};
struct iommu_ioas_map_ {
  uint32_t size, flags, ioas_id, reserved;
  uint64_t user_va, length, iova;
};
struct iommu_ioas_unmap_ { uint32_t size, ioas_id; uint64_t iova, length; };
struct vfio_device_bind_iommufd_ { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct vfio_device_attach_iommufd_pt_ { uint32_t argsz, flags, pt_id; };
#define IOMMU_IOAS_MAP_FIXED_IOVA (1u << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1u << 1)
#define IOMMU_IOAS_MAP_READABLE (1u << 2)

// ---- edu (QEMU hw/misc/edu.c) ---------------------------------------------------------
#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_REG_ID 0x00
#define EDU_REG_LIVENESS 0x04
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_CNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_CMD_RUN 1u
#define EDU_CMD_TO_RAM 2u
#define EDU_BUF 0x40000u
// QEMU 7.2's edu aborts the whole VM on a 4096-byte transfer. $EDU_SMOKE_XFER overrides the
// size (run_vm.sh's failure path is tested with 4096).
static unsigned XFER = 4095;
#define PAGE 4096u
#define IOVA_SRC 0x100000u  // below the default 28-bit edu DMA mask
#define IOVA_DST (IOVA_SRC + PAGE)

static const char *g_dev = "?";

static void fail(const char *fmt, ...) {
  va_list ap;
  int e = errno;
  fprintf(stdout, "edu_smoke: FAIL [%s]: ", g_dev);
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fprintf(stdout, " (errno %d: %s)\n", e, strerror(e));
  fflush(stdout);
  exit(1);
}

static void say(const char *fmt, ...) {
  va_list ap;
  fprintf(stdout, "edu_smoke: [%s] ", g_dev);
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
}

static unsigned read_hex_file(const char *path) {
  char buf[64] = {0};
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? (unsigned)strtoul(buf, NULL, 16) : 0;
}

static int find_edus(char bdfs[][32], int max) {
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) fail("opendir /sys/bus/pci/devices");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    if (e->d_name[0] == '.') continue;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", e->d_name);
    unsigned v = read_hex_file(p);
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/device", e->d_name);
    unsigned dv = read_hex_file(p);
    if (v == EDU_VENDOR && dv == EDU_DEVICE) snprintf(bdfs[n++], 32, "%.31s", e->d_name);
  }
  closedir(d);
  return n;
}

// ---- VFIO device helpers ----------------------------------------------------------------
struct dev {
  int fd;
  uint64_t cfg_off, bar0_off, bar0_size;
};

static void region(struct dev *d, uint32_t index, uint64_t *off, uint64_t *size) {
  struct vfio_region_info ri = {.argsz = sizeof ri, .index = index};
  if (ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &ri)) fail("VFIO_DEVICE_GET_REGION_INFO(%u)", index);
  *off = ri.offset;
  if (size) *size = ri.size;
}

static uint32_t rd32(struct dev *d, uint64_t reg) {
  uint32_t v;
  if (pread(d->fd, &v, 4, d->bar0_off + reg) != 4) fail("pread BAR0+0x%" PRIx64, reg);
  return v;
}
static void wr32(struct dev *d, uint64_t reg, uint32_t v) {
  if (pwrite(d->fd, &v, 4, d->bar0_off + reg) != 4) fail("pwrite BAR0+0x%" PRIx64, reg);
}
static void wr64(struct dev *d, uint64_t reg, uint64_t v) {
  if (pwrite(d->fd, &v, 8, d->bar0_off + reg) != 8) fail("pwrite64 BAR0+0x%" PRIx64, reg);
}

static void device_setup(struct dev *d) {
  region(d, VFIO_PCI_CONFIG_REGION_INDEX, &d->cfg_off, NULL);
  region(d, VFIO_PCI_BAR0_REGION_INDEX, &d->bar0_off, &d->bar0_size);
  uint16_t cmd;
  if (pread(d->fd, &cmd, 2, d->cfg_off + 4) != 2) fail("pread config COMMAND");
  cmd |= 0x2 | 0x4;  // memory space + bus master
  if (pwrite(d->fd, &cmd, 2, d->cfg_off + 4) != 2) fail("pwrite config COMMAND");
  if (pread(d->fd, &cmd, 2, d->cfg_off + 4) != 2) fail("pread config COMMAND");
  if (!(cmd & 0x4)) fail("bus mastering did not stick (COMMAND=0x%x)", cmd);
  uint32_t id = rd32(d, EDU_REG_ID);
  if ((id & 0xff) != 0xed) fail("BAR0 id register 0x%08x is not an edu", id);
  wr32(d, EDU_REG_LIVENESS, 0x12345678);
  uint32_t live = rd32(d, EDU_REG_LIVENESS);
  if (live != ~0x12345678u) fail("liveness register gave 0x%08x, want 0x%08x", live, ~0x12345678u);
  say("BAR0 %" PRIu64 " KiB, id 0x%08x, liveness ok, COMMAND=0x%x", d->bar0_size >> 10, id, cmd);
}

// One edu DMA; returns after the device clears the RUN bit.
static void edu_dma(struct dev *d, uint64_t src, uint64_t dst, uint32_t cnt, uint32_t cmd) {
  wr64(d, EDU_REG_DMA_SRC, src);
  wr64(d, EDU_REG_DMA_DST, dst);
  wr64(d, EDU_REG_DMA_CNT, cnt);
  wr32(d, EDU_REG_DMA_CMD, cmd | EDU_CMD_RUN);
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    if (!(rd32(d, EDU_REG_DMA_CMD) & EDU_CMD_RUN)) return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > 20) {
      errno = ETIMEDOUT;
      fail("DMA 0x%" PRIx64 " -> 0x%" PRIx64 " did not complete in 20 s", src, dst);
    }
    usleep(1000);
  }
}

// ---- the test proper, shared by both backends ---------------------------------------
struct backend {
  void (*map)(void *ctx);
  void (*unmap)(void *ctx);
  void *ctx;
};

static void fill(uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

static void run_dma_checks(struct dev *d, uint8_t *mem, struct backend *b) {
  uint8_t *src = mem, *dst = mem + PAGE;
  uint8_t *want = malloc(PAGE);
  fill(src, PAGE, 0x11);
  memcpy(want, src, PAGE);
  memset(dst, 0xa5, PAGE);

  edu_dma(d, IOVA_SRC, EDU_BUF, XFER, 0);               // RAM -> device
  edu_dma(d, EDU_BUF, IOVA_DST, XFER, EDU_CMD_TO_RAM);  // device -> RAM
  if (memcmp(dst, want, XFER) != 0) {
    size_t i = 0;
    while (i < XFER && dst[i] == want[i]) i++;
    errno = EIO;
    fail("round trip mismatch at byte %zu: got 0x%02x want 0x%02x", i, dst[i], want[i]);
  }
  if (dst[XFER] != 0xa5) { errno = EIO; fail("byte %u beyond the transfer was written", XFER); }
  say("mapped: DMA %u bytes RAM(iova 0x%x) -> device -> RAM(iova 0x%x): identical", XFER,
      IOVA_SRC, IOVA_DST);

  b->unmap(b->ctx);
  say("unmapped both pages");

  memset(dst, 0x5a, PAGE);
  edu_dma(d, EDU_BUF, IOVA_DST, XFER, EDU_CMD_TO_RAM);  // device -> unmapped IOVA
  size_t changed = 0;
  for (size_t i = 0; i < PAGE; i++) changed += dst[i] != 0x5a;
  if (changed) { errno = EIO; fail("after unmap, device -> RAM DMA changed %zu bytes", changed); }
  say("unmapped: DMA device -> RAM(iova 0x%x) changed 0 of %u bytes", IOVA_DST, XFER);

  fill(src, PAGE, 0x77);  // a pattern that must not reach the device
  edu_dma(d, IOVA_SRC, EDU_BUF, XFER, 0);  // unmapped IOVA -> device
  // The edu buffer is not readable through BAR0: map again and copy it out to dst.
  b->map(b->ctx);
  memset(dst, 0x5a, PAGE);
  edu_dma(d, EDU_BUF, IOVA_DST, XFER, EDU_CMD_TO_RAM);
  if (memcmp(dst, src, XFER) == 0) { errno = EIO; fail("after unmap, RAM -> device DMA read the new pattern"); }
  say("unmapped: DMA RAM(iova 0x%x) -> device read none of the new pattern (device buffer %s)",
      IOVA_SRC, memcmp(dst, want, XFER) == 0 ? "kept the old data" : "changed, but not to RAM's data");
  b->unmap(b->ctx);
  free(want);
}

static uint8_t *alloc_pages(void) {
  void *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("mmap");
  memset(p, 0, 2 * PAGE);
  return p;
}

// ---- type1 ----------------------------------------------------------------------------
struct type1_ctx { int container; uint8_t *mem; };
static void type1_map(void *c) {
  struct type1_ctx *t = c;
  struct vfio_iommu_type1_dma_map m = {
      .argsz = sizeof m,
      .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
      .vaddr = (uintptr_t)t->mem, .iova = IOVA_SRC, .size = 2 * PAGE};
  if (ioctl(t->container, VFIO_IOMMU_MAP_DMA, &m)) fail("VFIO_IOMMU_MAP_DMA iova 0x%x", IOVA_SRC);
}
static void type1_unmap(void *c) {
  struct type1_ctx *t = c;
  struct vfio_iommu_type1_dma_unmap um = {.argsz = sizeof um, .iova = IOVA_SRC, .size = 2 * PAGE};
  if (ioctl(t->container, VFIO_IOMMU_UNMAP_DMA, &um)) fail("VFIO_IOMMU_UNMAP_DMA");
  if (um.size != 2 * PAGE) { errno = EIO; fail("VFIO_IOMMU_UNMAP_DMA unmapped %llu bytes", (unsigned long long)um.size); }
}

static void test_type1(const char *bdf) {
  char p[PATH_MAX], link[PATH_MAX];
  snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/iommu_group", bdf);
  ssize_t n = readlink(p, link, sizeof link - 1);
  if (n < 0) fail("readlink %s (no IOMMU group: is the IOMMU on?)", p);
  link[n] = 0;
  const char *group = strrchr(link, '/') + 1;

  int container = open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) fail("open /dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) fail("VFIO_GET_API_VERSION");
  if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) fail("no VFIO_TYPE1v2_IOMMU");
  snprintf(p, sizeof p, "/dev/vfio/%s", group);
  int gfd = open(p, O_RDWR);
  if (gfd < 0) fail("open %s", p);
  struct vfio_group_status gs = {.argsz = sizeof gs};
  if (ioctl(gfd, VFIO_GROUP_GET_STATUS, &gs)) fail("VFIO_GROUP_GET_STATUS");
  if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) { errno = EBUSY; fail("group %s not viable (a device in it is not bound to vfio-pci)", group); }
  if (ioctl(gfd, VFIO_GROUP_SET_CONTAINER, &container)) fail("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) fail("VFIO_SET_IOMMU(TYPE1v2)");
  struct vfio_iommu_type1_info info = {.argsz = sizeof info};
  if (ioctl(container, VFIO_IOMMU_GET_INFO, &info)) fail("VFIO_IOMMU_GET_INFO");
  say("type1: group %s, container ready, iova_pgsizes 0x%llx", group, (unsigned long long)info.iova_pgsizes);

  uint8_t *mem = alloc_pages();
  struct type1_ctx tc = {container, mem};
  type1_map(&tc);

  struct dev d = {0};
  d.fd = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (d.fd < 0) fail("VFIO_GROUP_GET_DEVICE_FD %s", bdf);
  device_setup(&d);
  struct backend b = {type1_map, type1_unmap, &tc};
  run_dma_checks(&d, mem, &b);
  close(d.fd);
  close(gfd);
  close(container);
  munmap(mem, 2 * PAGE);
}

// ---- iommufd ---------------------------------------------------------------------------
struct iommufd_ctx { int iommufd; uint32_t ioas; uint8_t *mem; };
static void iommufd_map(void *c) {
  struct iommufd_ctx *t = c;
  struct iommu_ioas_map_ m = {
      .size = sizeof m,
      .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      .ioas_id = t->ioas, .user_va = (uintptr_t)t->mem, .length = 2 * PAGE, .iova = IOVA_SRC};
  if (ioctl(t->iommufd, IOMMU_IOAS_MAP_, &m)) fail("IOMMU_IOAS_MAP iova 0x%x", IOVA_SRC);
}
static void iommufd_unmap(void *c) {
  struct iommufd_ctx *t = c;
  struct iommu_ioas_unmap_ um = {.size = sizeof um, .ioas_id = t->ioas, .iova = IOVA_SRC, .length = 2 * PAGE};
  if (ioctl(t->iommufd, IOMMU_IOAS_UNMAP_, &um)) fail("IOMMU_IOAS_UNMAP");
  if (um.length != 2 * PAGE) { errno = EIO; fail("IOMMU_IOAS_UNMAP unmapped %llu bytes", (unsigned long long)um.length); }
}

static void test_iommufd(const char *bdf) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vfio-dev", bdf);
  DIR *dir = opendir(p);
  if (!dir) fail("opendir %s (device not bound to vfio-pci, or no VFIO_DEVICE_CDEV)", p);
  char cdev[PATH_MAX] = "";
  struct dirent *e;
  while ((e = readdir(dir)))
    if (!strncmp(e->d_name, "vfio", 4)) snprintf(cdev, sizeof cdev, "/dev/vfio/devices/%s", e->d_name);
  closedir(dir);
  if (!cdev[0]) { errno = ENOENT; fail("no vfioN under %s", p); }

  int iommufd = open("/dev/iommu", O_RDWR);
  if (iommufd < 0) fail("open /dev/iommu");
  struct dev d = {0};
  d.fd = open(cdev, O_RDWR);
  if (d.fd < 0) fail("open %s", cdev);
  struct vfio_device_bind_iommufd_ bind = {.argsz = sizeof bind, .iommufd = iommufd};
  if (ioctl(d.fd, VFIO_DEVICE_BIND_IOMMUFD_, &bind)) fail("VFIO_DEVICE_BIND_IOMMUFD");
  struct iommu_ioas_alloc_ alloc = {.size = sizeof alloc};
  if (ioctl(iommufd, IOMMU_IOAS_ALLOC_, &alloc)) fail("IOMMU_IOAS_ALLOC");
  struct vfio_device_attach_iommufd_pt_ at = {.argsz = sizeof at, .pt_id = alloc.out_ioas_id};
  if (ioctl(d.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT_, &at)) fail("VFIO_DEVICE_ATTACH_IOMMUFD_PT");

  struct iommu_iova_range_ ranges[16];
  struct iommu_ioas_iova_ranges_ rr = {.size = sizeof rr, .ioas_id = alloc.out_ioas_id,
                                       .num_iovas = 16, .allowed_iovas = (uintptr_t)ranges};
  if (ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES_, &rr)) fail("IOMMU_IOAS_IOVA_RANGES");
  char rs[512] = "";
  for (uint32_t i = 0; i < rr.num_iovas && i < 16; i++) {
    size_t l = strlen(rs);
    snprintf(rs + l, sizeof rs - l, " [0x%llx-0x%llx]", (unsigned long long)ranges[i].start,
             (unsigned long long)ranges[i].last);
  }
  say("iommufd: %s devid %u, ioas %u, alignment 0x%llx, usable%s", cdev, bind.out_devid,
      alloc.out_ioas_id, (unsigned long long)rr.out_iova_alignment, rs);

  uint8_t *mem = alloc_pages();
  struct iommufd_ctx ic = {iommufd, alloc.out_ioas_id, mem};
  iommufd_map(&ic);

  device_setup(&d);
  struct backend b = {iommufd_map, iommufd_unmap, &ic};
  run_dma_checks(&d, mem, &b);
  close(d.fd);  // unbinds the device from the iommufd
  struct iommu_destroy_ ds = {.size = sizeof ds, .id = alloc.out_ioas_id};
  if (ioctl(iommufd, IOMMU_DESTROY_, &ds)) fail("IOMMU_DESTROY ioas %u", alloc.out_ioas_id);
  close(iommufd);
  munmap(mem, 2 * PAGE);
}

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "type1") && strcmp(argv[1], "iommufd"))) {
    fprintf(stderr, "usage: %s type1|iommufd [BDF...]\n", argv[0]);
    return 2;
  }
  int iommufd = !strcmp(argv[1], "iommufd");
  char bdfs[8][32];
  int n = 0;
  for (int i = 2; i < argc && n < 8; i++) snprintf(bdfs[n++], 32, "%s", argv[i]);
  if (n == 0) n = find_edus(bdfs, 8);
  if (getenv("EDU_SMOKE_XFER")) XFER = (unsigned)strtoul(getenv("EDU_SMOKE_XFER"), NULL, 0);
  if (XFER == 0 || XFER > PAGE) { errno = EINVAL; fail("EDU_SMOKE_XFER must be 1..%u", PAGE); }
  if (n == 0) { errno = ENODEV; fail("no edu device (1234:11e8) in /sys/bus/pci/devices"); }
  for (int i = 0; i < n; i++) {
    g_dev = bdfs[i];
    if (iommufd) test_iommufd(bdfs[i]); else test_type1(bdfs[i]);
  }
  g_dev = "all";
  printf("edu_smoke: PASS %s: %d edu device(s), round trip ok, no DMA after unmap\n", argv[1], n);
  return 0;
}
