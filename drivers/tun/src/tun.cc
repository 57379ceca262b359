// faultstack_tun: a small Linux TUN binding for faultstack (node-addon-api, no C++ exceptions).
//
// Exports
//   open(name, vnetHdr, multiQueue, queues[, tap]) -> { name, fds: number[], created, flags }
//                                                 (tap: IFF_TAP, Ethernet frames, instead of IFF_TUN)
//   setVnetHdrSize(fd, size) -> boolean
//   setOffload(fd, flags) -> boolean            (TUNSETOFFLOAD; false when the kernel refuses)
//   getIfFlags(fd) -> number                     (TUNGETIFF)
//   ifExists(name) -> boolean
//   getMtu(name) -> number, setMtu(name, mtu)    (SIOCGIFMTU / SIOCSIFMTU on a dgram socket;
//                                                 ioctl, not sysfs, so it is right in any netns)
//   getTxQueueLen(name) -> number                (SIOCGIFTXQLEN: the kernel's queue of packets
//                                                 for us, per TUN queue; it drops past it)
//   setTxQueueLen(name, n)                       (SIOCSIFTXQLEN)
//   closeFd(fd)
//   setSteeringBpf(fd, insns: Buffer) -> true   (BPF_PROG_LOAD of a socket-filter program,
//                                                 then TUNSETSTEERINGEBPF: it picks the queue
//                                                 of every packet the kernel sends us; the
//                                                 program is assembled in drivers/tun/steering.ts)
//   Queue(fd, vnetHdr, slab: Buffer, slotSize, slots, info: Uint32Array, counters: Float64Array,
//         onBurst: (n: number) => void)
//     .start() .close() .ref() .unref()
//     .write(packets: Buffer[], count, metas: Uint32Array | null) -> number written
//     .writeFramed(packets, count, metas, heads: Buffer, headStride, headLens: Uint8Array) -> number written
//                           TAP: packet i goes out as heads[i*headStride, +headLens[i]) ++ packets[i]
//                           in one writev (the Ethernet header without copying the packet)
//     .setSlot(i, buffer)   read slot i into `buffer` from now on (at least slotSize bytes): JS
//                           gives a packet it kept (zero-copy receive) away and a fresh slot back
//     .writeDetached(packets: Buffer[], count) -> packets queued
//                           small stateless packets (at most kDetachedMax bytes: SYN cookies,
//                           resets for no connection) copied into a ring that a writer thread
//                           of this queue writes, so that the kernel's receive path for them
//                           (run inside write() on a TUN device) runs off the JS thread. FIFO
//                           among themselves, unordered against write(); a full ring drops
//                           (txDrops). The thread starts on first use and is joined by close().
//
// Receive: one uv_poll_t per fd (level triggered). On readable, read() up to `slots` packets
// (or until EAGAIN) into slots (initially fixed slices of the slab; setSlot replaces one), record
// per packet 8 u32 in `info` (offset within its slot, length, flags, gsoType, hdrLen, gsoSize,
// csumStart, csumOffset), then make ONE call into JS with the count; a full burst is followed by
// the next, up to kMaxBurstsPerEvent per event, so that each turn empties the kernel's queue.
// A fatal read error stops polling and calls onBurst(-errno).
// Errors thrown by onBurst are reported as uncaught exceptions (napi_fatal_exception).
//
// Counters (Float64Array, shared with JS):
//   0 rxTruncated  1 rxErrors  2 txPackets  3 txBytes  4 txDrops (EAGAIN/ENOBUFS)
//   5 txErrors (other errno)  6 lastErrno (rx or tx)  7 rxReadCalls  8 synEarlyDrops
//   9 rxCsumVerified  10 rxGroMerged  11 txDeferred (packets handed to the writer thread)
//
// Receive coalescing (GRO; TUN without the virtio header, only with setRxChecksum on):
//     .setGro(on)           within one burst, a TCP segment whose checksum was good is
//                           appended to the burst's earlier segment of its flow when it
//                           continues it exactly: next sequence number, the same ACK,
//                           window, TCP options (so the same TSval), TOS, TTL and DF, only
//                           ACK and PSH set, no IP options, no more payload than the first
//                           segment's (which sets the size) and 64 KiB at most in all. A
//                           shorter segment or one with PSH ends the run; any other packet
//                           of the flow (a pure ACK, a FIN, a retransmission) too. The head
//                           then reads as one large packet (IP total length and header
//                           checksum rewritten, the TCP checksum left as it was) whose
//                           info says GSO TCPv4 with the first segment's size, as a
//                           kernel's GRO packet would; up to kGroFlows flows per burst.
//                           Slots must hold 64 KiB. rxGroMerged counts the segments
//                           appended (each would otherwise have been a packet for JS).
//
// Early SYN drop (TUN only; off until setSynBudget(n > 0)):
//     .setSynBudget(n)      while the queue is backlogged (the previous read loop ended
//                           without EAGAIN: more was waiting), at most n bare SYNs (SYN
//                           without ACK, RST or FIN; IPv4, unfragmented) from sources not
//                           verified are handed to JS per `slots` packets read; the rest are dropped
//                           right after their read, before any JavaScript runs for them.
//     .pollNow() -> n       busy polling: one read loop now, from JS, without the callback; n
//                           packets are in the slots and info (JS delivers them), 0 none,
//                           -errno a fatal read error (polling stopped)
//     .allowSource(addr)    addr (IPv4, host order) completed a handshake: its SYNs are
//                           never dropped early (a direct-mapped table of 65,536 entries;
//                           a collision forgets the older one, which then only loses its
//                           exemption).

#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <linux/bpf.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

namespace {

// struct virtio_net_hdr (legacy layout, host endian = little endian on the targets we run on).
// Declared here because <linux/virtio_net.h> does not compile as C++ (a field named `class`).
struct VnetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
constexpr int kVnetHdrLen = sizeof(VnetHdr);
static_assert(kVnetHdrLen == 10, "virtio_net_hdr must be 10 bytes");
constexpr uint32_t kInfoStride = 8;
constexpr uint32_t kMetaStride = 6;
// writeDetached: the largest packet it takes, and ring slots (a power of two).
constexpr uint32_t kDetachedMax = 120;
constexpr uint32_t kDetachedSlots = 8192;
// Deferred writes (setTxThread): the ring of packets for the writer thread (a power of two),
// the smallest packet worth the hand-off, and the bit of a meta's flags word by which the
// sender says the buffer is never written again (its bytes may go out later).
constexpr uint32_t kTxSlots = 128;
constexpr uint32_t kDeferMin = 8192;
// ... and the batch (one flush) from which owned packets of any size go: many packets in
// one flush mean load, where the thread's hand-off pays; one or two mean a request and its
// answer, where it would only add latency.
constexpr uint32_t kDeferBatch = 4;
constexpr uint32_t kOwnedFlag = 0x100;
constexpr uint32_t kHeadMax = 32;

enum Counter {
  kRxTruncated = 0,
  kRxErrors = 1,
  kTxPackets = 2,
  kTxBytes = 3,
  kTxDrops = 4,
  kTxErrors = 5,
  kLastErrno = 6,
  kRxReadCalls = 7,
  kSynEarlyDrops = 8,
  kRxCsumVerified = 9,
  kRxGroMerged = 10,
  kTxDeferred = 11,
  kCounterCount = 12,
};
// VIRTIO_NET_HDR_F_DATA_VALID: what the software receive checksum marks a good packet with.
constexpr uint32_t kFDataValid = 2;
// VIRTIO_NET_HDR_GSO_TCPV4: what a GRO head's info says.
constexpr uint32_t kGsoTcpV4 = 1;

// The early SYN drop's table of verified sources: direct-mapped, a power of two.
constexpr uint32_t kAllowSlots = 1u << 16;

const char* ErrnoCode(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

// Throws an Error carrying code / errno / syscall; the JS side turns it into a one-line
// message with context. Returns undefined for convenient `return Throw(...)`.
Napi::Value ThrowErrno(Napi::Env env, const char* syscall, int err) {
  std::string msg = std::string(syscall) + ": " + strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoCode(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool CopyIfName(const std::string& name, char out[IFNAMSIZ]) {
  if (name.size() >= IFNAMSIZ) return false;
  memset(out, 0, IFNAMSIZ);
  memcpy(out, name.data(), name.size());
  return true;
}

// ---------------------------------------------------------------------------------------------
// open(name, vnetHdr, multiQueue, queues)

Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString()) return ThrowType(env, "open(name, vnetHdr, multiQueue, queues[, tap])");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  bool vnet = info[1].ToBoolean().Value();
  bool mq = info[2].ToBoolean().Value();
  int queues = info[3].ToNumber().Int32Value();
  bool tap = info.Length() > 4 && info[4].ToBoolean().Value();
  if (!mq) queues = 1;
  if (queues < 1 || queues > 256) return ThrowType(env, "queues must be 1..256");

  char want[IFNAMSIZ];
  if (!CopyIfName(name, want)) {
    return ThrowErrno(env, "TUNSETIFF", ENAMETOOLONG);
  }
  bool existed = false;
  if (!name.empty() && name.find('%') == std::string::npos) existed = if_nametoindex(want) != 0;

  std::vector<int> fds;
  auto fail = [&](const char* syscall, int err) {
    for (int f : fds) ::close(f);
    return ThrowErrno(env, syscall, err);
  };

  char got[IFNAMSIZ] = {0};
  for (int q = 0; q < queues; q++) {
    int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return fail("open", errno);
    fds.push_back(fd);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = (tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI;
    if (vnet) ifr.ifr_flags |= IFF_VNET_HDR;
    if (mq) ifr.ifr_flags |= IFF_MULTI_QUEUE;
    // Queue 0 may carry a pattern ("fs%d"); later queues attach to the name the kernel chose.
    memcpy(ifr.ifr_name, q == 0 ? want : got, IFNAMSIZ);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) return fail("TUNSETIFF", errno);
    if (q == 0) {
      memcpy(got, ifr.ifr_name, IFNAMSIZ);
      got[IFNAMSIZ - 1] = 0;
    }
  }

  if (vnet) {
    int sz = kVnetHdrLen;
    if (ioctl(fds[0], TUNSETVNETHDRSZ, &sz) < 0) return fail("TUNSETVNETHDRSZ", errno);
  }

  struct ifreq cur;
  memset(&cur, 0, sizeof cur);
  unsigned flags = 0;
  if (ioctl(fds[0], TUNGETIFF, &cur) == 0) flags = static_cast<unsigned short>(cur.ifr_flags);
  // Not persistent and not there before: we created it, and it goes away with our last fd.
  bool created = !existed && !(flags & IFF_PERSIST);

  Napi::Object out = Napi::Object::New(env);
  out.Set("name", Napi::String::New(env, got));
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  out.Set("fds", arr);
  out.Set("created", Napi::Boolean::New(env, created));
  out.Set("flags", Napi::Number::New(env, flags));
  return out;
}

Napi::Value SetVnetHdrSize(const Napi::CallbackInfo& info) {
  int fd = info[0].ToNumber().Int32Value();
  int sz = info[1].ToNumber().Int32Value();
  return Napi::Boolean::New(info.Env(), ioctl(fd, TUNSETVNETHDRSZ, &sz) == 0);
}

Napi::Value SetOffload(const Napi::CallbackInfo& info) {
  int fd = info[0].ToNumber().Int32Value();
  unsigned long flags = info[1].ToNumber().Uint32Value();
  return Napi::Boolean::New(info.Env(), ioctl(fd, TUNSETOFFLOAD, flags) == 0);
}

// Loads `insns` (struct bpf_insn[], 8 bytes each) as a socket-filter program and makes it
// the device's queue selector; the verifier's log is in the error when it refuses.
Napi::Value SetSteeringBpf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsBuffer()) return ThrowType(env, "setSteeringBpf(fd, insns: Buffer)");
  int fd = info[0].ToNumber().Int32Value();
  Napi::Buffer<uint8_t> code = info[1].As<Napi::Buffer<uint8_t>>();
  if (code.Length() == 0 || code.Length() % sizeof(struct bpf_insn) != 0) return ThrowType(env, "setSteeringBpf: insns must be whole 8-byte instructions");
  static char log[4096];
  log[0] = 0;
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insn_cnt = static_cast<uint32_t>(code.Length() / sizeof(struct bpf_insn));
  attr.insns = reinterpret_cast<uint64_t>(code.Data());
  attr.license = reinterpret_cast<uint64_t>("GPL");
  attr.log_level = 1;
  attr.log_size = sizeof(log);
  attr.log_buf = reinterpret_cast<uint64_t>(log);
  int prog = static_cast<int>(syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof(attr)));
  if (prog < 0) {
    int err = errno;
    std::string msg = std::string("BPF_PROG_LOAD: ") + strerror(err) + (log[0] ? std::string(": ") + log : std::string());
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, ErrnoCode(err)));
    e.Set("syscall", Napi::String::New(env, "bpf"));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // The device keeps its own reference to the program: our descriptor can go.
  int rc = ioctl(fd, TUNSETSTEERINGEBPF, &prog);
  int err = errno;
  close(prog);
  if (rc < 0) return ThrowErrno(env, "TUNSETSTEERINGEBPF", err);
  return Napi::Boolean::New(env, true);
}

Napi::Value GetIfFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].ToNumber().Int32Value();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) return ThrowErrno(env, "TUNGETIFF", errno);
  return Napi::Number::New(env, static_cast<unsigned short>(ifr.ifr_flags));
}

Napi::Value IfExists(const Napi::CallbackInfo& info) {
  std::string name = info[0].ToString().Utf8Value();
  char n[IFNAMSIZ];
  if (!CopyIfName(name, n)) return Napi::Boolean::New(info.Env(), false);
  return Napi::Boolean::New(info.Env(), if_nametoindex(n) != 0);
}

Napi::Value MtuIoctl(const Napi::CallbackInfo& info, bool set) {
  Napi::Env env = info.Env();
  std::string name = info[0].ToString().Utf8Value();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!CopyIfName(name, ifr.ifr_name)) return ThrowErrno(env, set ? "SIOCSIFMTU" : "SIOCGIFMTU", ENAMETOOLONG);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(env, "socket", errno);
  int rc;
  if (set) {
    ifr.ifr_mtu = info[1].ToNumber().Int32Value();
    rc = ioctl(s, SIOCSIFMTU, &ifr);
  } else {
    rc = ioctl(s, SIOCGIFMTU, &ifr);
  }
  int err = errno;
  ::close(s);
  if (rc < 0) return ThrowErrno(env, set ? "SIOCSIFMTU" : "SIOCGIFMTU", err);
  return Napi::Number::New(env, ifr.ifr_mtu);
}

Napi::Value GetMtu(const Napi::CallbackInfo& info) { return MtuIoctl(info, false); }

Napi::Value GetTxQueueLen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].ToString().Utf8Value();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!CopyIfName(name, ifr.ifr_name)) return ThrowErrno(env, "SIOCGIFTXQLEN", ENAMETOOLONG);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(env, "socket", errno);
  int rc = ioctl(s, SIOCGIFTXQLEN, &ifr);
  int err = errno;
  ::close(s);
  if (rc < 0) return ThrowErrno(env, "SIOCGIFTXQLEN", err);
  return Napi::Number::New(env, ifr.ifr_qlen);
}
Napi::Value SetMtu(const Napi::CallbackInfo& info) { return MtuIoctl(info, true); }

// setTxQueueLen(name, n): SIOCSIFTXQLEN, the packets the kernel queues for a TUN queue
// before it drops (tun resizes its ring to it).
Napi::Value SetTxQueueLen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].ToString().Utf8Value();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!CopyIfName(name, ifr.ifr_name)) return ThrowErrno(env, "SIOCSIFTXQLEN", ENAMETOOLONG);
  ifr.ifr_qlen = info[1].ToNumber().Int32Value();
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(env, "socket", errno);
  int rc = ioctl(s, SIOCSIFTXQLEN, &ifr);
  int err = errno;
  ::close(s);
  if (rc < 0) return ThrowErrno(env, "SIOCSIFTXQLEN", err);
  return env.Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = info[0].ToNumber().Int32Value();
  if (fd >= 0) ::close(fd);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------------------------
// Queue: one fd, its poll handle, its receive slab.

class Queue : public Napi::ObjectWrap<Queue> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Queue",
                       {
                           InstanceMethod<&Queue::Start>("start"),
                           InstanceMethod<&Queue::Close>("close"),
                           InstanceMethod<&Queue::Write>("write"),
                           InstanceMethod<&Queue::RefLoop>("ref"),
                           InstanceMethod<&Queue::UnrefLoop>("unref"),
                           InstanceMethod<&Queue::SetSlot>("setSlot"),
                           InstanceMethod<&Queue::WriteFramed>("writeFramed"),
                           InstanceMethod<&Queue::WriteDetached>("writeDetached"),
                           InstanceMethod<&Queue::SetSynBudget>("setSynBudget"),
                           InstanceMethod<&Queue::SetRxChecksum>("setRxChecksum"),
                           InstanceMethod<&Queue::SetGro>("setGro"),
                           InstanceMethod<&Queue::AllowSource>("allowSource"),
                           InstanceMethod<&Queue::PollNow>("pollNow"),
                           InstanceMethod<&Queue::SetTxThread>("setTxThread"),
                           InstanceMethod<&Queue::Sync>("sync"),
                       });
  }

  explicit Queue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Queue>(info) {
    Napi::Env env = info.Env();
    env_ = env;
    if (info.Length() < 8 || !info[2].IsBuffer() || !info[5].IsTypedArray() || !info[6].IsTypedArray() ||
        !info[7].IsFunction()) {
      ThrowType(env, "Queue(fd, vnetHdr, slab, slotSize, slots, info, counters, onBurst)");
      return;
    }
    fd_ = info[0].ToNumber().Int32Value();
    vnet_ = info[1].ToBoolean().Value();
    // Optional 9th argument: false when the fd belongs to someone else (a TunDevice in
    // another thread), so close() stops polling but leaves the fd open.
    ownsFd_ = info.Length() < 9 || info[8].IsUndefined() || info[8].ToBoolean().Value();
    Napi::Buffer<uint8_t> slab = info[2].As<Napi::Buffer<uint8_t>>();
    slotSize_ = info[3].ToNumber().Uint32Value();
    slots_ = info[4].ToNumber().Uint32Value();
    Napi::TypedArray ia = info[5].As<Napi::TypedArray>();
    Napi::TypedArray ca = info[6].As<Napi::TypedArray>();
    if (ia.TypedArrayType() != napi_uint32_array || ca.TypedArrayType() != napi_float64_array) {
      ThrowType(env, "info must be a Uint32Array and counters a Float64Array");
      return;
    }
    Napi::Uint32Array infoArr = ia.As<Napi::Uint32Array>();
    Napi::Float64Array counters = ca.As<Napi::Float64Array>();
    if (slots_ == 0 || slotSize_ <= static_cast<uint32_t>(vnet_ ? kVnetHdrLen : 0) ||
        static_cast<uint64_t>(slotSize_) * slots_ > slab.Length() || infoArr.ElementLength() < slots_ * kInfoStride ||
        counters.ElementLength() < kCounterCount) {
      ThrowType(env, "slab / info / counters too small for slots x slotSize");
      return;
    }
    slab_ = slab.Data();
    slotPtr_.resize(slots_);
    slotRefs_.resize(slots_);
    for (uint32_t i = 0; i < slots_; i++) slotPtr_[i] = slab_ + static_cast<size_t>(i) * slotSize_;
    info_ = infoArr.Data();
    counters_ = counters.Data();
    slabRef_ = Napi::Persistent(slab);
    infoRef_ = Napi::Persistent(infoArr);
    countersRef_ = Napi::Persistent(counters);
    cb_ = Napi::Persistent(info[7].As<Napi::Function>());
    napi_value resName = Napi::String::New(env, "faultstack:tun");
    if (napi_async_init(env, nullptr, resName, &actx_) != napi_ok) actx_ = nullptr;
    napi_get_uv_event_loop(env, &loop_);
  }

  ~Queue() override {
    // Finalizer path (object collected without close()): release the OS resources.
    if (!closed_) {
      closed_ = true;
      StopWriter();
      StopPoll();
      if (fd_ >= 0 && ownsFd_) ::close(fd_);
      fd_ = -1;
    }
    if (actx_) napi_async_destroy(env_, actx_);
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) return ThrowErrno(env, "uv_poll_start", EBADF);
    if (poll_) return env.Undefined();
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(loop_, poll_, fd_);
    if (rc < 0) {
      delete poll_;
      poll_ = nullptr;
      return ThrowErrno(env, "uv_poll_init", -rc);
    }
    poll_->data = this;
    rc = uv_poll_start(poll_, UV_READABLE, &Queue::OnPoll);
    if (rc < 0) {
      StopPoll();
      return ThrowErrno(env, "uv_poll_start", -rc);
    }
    if (!loopRef_) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    // While polling, the JS object must not be collected.
    Ref();
    held_ = true;
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    DoClose();
    return info.Env().Undefined();
  }

  Napi::Value RefLoop(const Napi::CallbackInfo& info) {
    loopRef_ = true;
    if (poll_) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value UnrefLoop(const Napi::CallbackInfo& info) {
    loopRef_ = false;
    if (poll_) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  // setSlot(i, buffer): slot i is read into `buffer` from the next burst on.
  Napi::Value SetSlot(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsBuffer()) return ThrowType(env, "setSlot(i, buffer)");
    uint32_t i = info[0].ToNumber().Uint32Value();
    Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
    if (i >= slots_ || b.Length() < slotSize_) return ThrowType(env, "setSlot: no such slot, or buffer smaller than a slot");
    slotPtr_[i] = b.Data();
    slotRefs_[i] = Napi::Persistent(b);
    return env.Undefined();
  }

  // write(packets, count, metas | null) -> packets written
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray()) return ThrowType(env, "write(packets, count, metas)");
    Napi::Array pkts = info[0].As<Napi::Array>();
    uint32_t count = info[1].ToNumber().Uint32Value();
    if (count > pkts.Length()) count = pkts.Length();
    const uint32_t* metas = nullptr;
    size_t metaLen = 0;
    if (info.Length() > 2 && info[2].IsTypedArray()) {
      Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
      if (ta.TypedArrayType() != napi_uint32_array) return ThrowType(env, "metas must be a Uint32Array");
      Napi::Uint32Array m = ta.As<Napi::Uint32Array>();
      metas = m.Data();
      metaLen = m.ElementLength();
    }
    CatchUpWriter();
    if (closed_) {
      counters_[kTxDrops] += count;
      return Napi::Number::New(env, 0);
    }
    uint32_t written = 0;
    for (uint32_t i = 0; i < count; i++) {
      napi_value v;
      if (napi_get_element(env, pkts, i, &v) != napi_ok) break;
      void* data = nullptr;
      size_t len = 0;
      if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) {
        // Not a Buffer/Uint8Array: count it, do not throw in the middle of a batch.
        bool dummy;
        napi_is_exception_pending(env, &dummy);
        if (dummy) {
          napi_value e;
          napi_get_and_clear_last_exception(env, &e);
        }
        counters_[kTxErrors] += 1;
        counters_[kLastErrno] = EINVAL;
        continue;
      }
      VnetHdr h;
      bool owned = FillVnet(h, metas, metaLen, i);
      if (SendPacket(v, vnet_ ? &h : nullptr, nullptr, 0, static_cast<const uint8_t*>(data), len, owned, count >= kDeferBatch)) written++;
    }
    return Napi::Number::New(env, written);
  }

  // ------------------------------------------------------------------------------------------
  // TAP: gather write. writeFramed(packets, count, metas | null, heads, headStride, headLens)
  // Packet i is written as [virtio_net_hdr] + heads[i*headStride, +headLens[i]) + packets[i] in
  // one writev: the link header goes in front of a (possibly 64 KiB) packet without a copy.
  // headLens[i] == 0: the packet is a whole frame already. Counters as for write().
  Napi::Value WriteFramed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 6 || !info[0].IsArray() || !info[3].IsBuffer() || !info[5].IsTypedArray()) {
      return ThrowType(env, "writeFramed(packets, count, metas, heads, headStride, headLens)");
    }
    Napi::Array pkts = info[0].As<Napi::Array>();
    uint32_t count = info[1].ToNumber().Uint32Value();
    if (count > pkts.Length()) count = pkts.Length();
    const uint32_t* metas = nullptr;
    size_t metaLen = 0;
    if (info[2].IsTypedArray()) {
      Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
      if (ta.TypedArrayType() != napi_uint32_array) return ThrowType(env, "metas must be a Uint32Array");
      Napi::Uint32Array m = ta.As<Napi::Uint32Array>();
      metas = m.Data();
      metaLen = m.ElementLength();
    }
    Napi::Buffer<uint8_t> heads = info[3].As<Napi::Buffer<uint8_t>>();
    uint32_t stride = info[4].ToNumber().Uint32Value();
    Napi::TypedArray la = info[5].As<Napi::TypedArray>();
    if (la.TypedArrayType() != napi_uint8_array) return ThrowType(env, "headLens must be a Uint8Array");
    Napi::Uint8Array lens = la.As<Napi::Uint8Array>();
    if (lens.ElementLength() < count || static_cast<uint64_t>(stride) * count > heads.Length()) {
      return ThrowType(env, "writeFramed: heads / headLens smaller than count x headStride");
    }
    if (stride > kHeadMax) return ThrowType(env, "writeFramed: headStride must be at most 32 (a queued packet keeps its head)");
    CatchUpWriter();
    if (closed_) {
      counters_[kTxDrops] += count;
      return Napi::Number::New(env, 0);
    }
    uint32_t written = 0;
    for (uint32_t i = 0; i < count; i++) {
      napi_value v;
      if (napi_get_element(env, pkts, i, &v) != napi_ok) break;
      void* data = nullptr;
      size_t len = 0;
      if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) {
        bool pending = false;
        napi_is_exception_pending(env, &pending);
        if (pending) {
          napi_value e;
          napi_get_and_clear_last_exception(env, &e);
        }
        counters_[kTxErrors] += 1;
        counters_[kLastErrno] = EINVAL;
        continue;
      }
      uint32_t hl = lens[i];
      if (hl > stride) hl = stride;
      VnetHdr h;
      bool owned = FillVnet(h, metas, metaLen, i);
      const uint8_t* head = heads.Data() + static_cast<size_t>(i) * stride;
      if (SendPacket(v, vnet_ ? &h : nullptr, head, hl, static_cast<const uint8_t*>(data), len, owned, count >= kDeferBatch)) written++;
    }
    return Napi::Number::New(env, written);
  }


  // The virtio header of packet i from `metas` (zeros without one). Returns whether the
  // sender marked the buffer as its last use (kOwnedFlag): it may then be written later.
  static bool FillVnet(VnetHdr& h, const uint32_t* metas, size_t metaLen, uint32_t i) {
    memset(&h, 0, sizeof h);
    if (!metas || (i + 1) * kMetaStride > metaLen) return false;
    const uint32_t* m = metas + i * kMetaStride;
    h.flags = static_cast<uint8_t>(m[0]);
    h.gso_type = static_cast<uint8_t>(m[1]);
    h.hdr_len = static_cast<uint16_t>(m[2]);
    h.gso_size = static_cast<uint16_t>(m[3]);
    h.csum_start = static_cast<uint16_t>(m[4]);
    h.csum_offset = static_cast<uint16_t>(m[5]);
    return (m[0] & kOwnedFlag) != 0;
  }

  // One packet, [virtio header] [head] data, in one writev. Written now, or queued for the
  // writer thread (setTxThread on) when it may be (owned, and at least kDeferMin bytes or
  // part of a batch of kDeferBatch or more) or must be (packets of this queue are still
  // waiting there: nothing overtakes them). Returns false when it was dropped or failed
  // (counted).
  bool SendPacket(napi_value v, const VnetHdr* h, const uint8_t* head, uint32_t hl, const uint8_t* data, size_t len, bool owned,
                  bool batch) {
    if (txThread_ && ((owned && (len >= kDeferMin || batch)) || txHead_ != txWritten_.load(std::memory_order_acquire))) {
      Defer(v, h, head, hl, data, len, owned);
      return true;
    }
    struct iovec iov[3];
    int n = 0;
    if (h) iov[n++] = {const_cast<VnetHdr*>(h), sizeof *h};
    if (hl > 0) iov[n++] = {const_cast<uint8_t*>(head), hl};
    iov[n++] = {const_cast<uint8_t*>(data), len};
    ssize_t rc;
    do rc = writev(fd_, iov, n);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) {
      int err = errno;
      counters_[kLastErrno] = err;
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) counters_[kTxDrops] += 1;
      else counters_[kTxErrors] += 1;
      return false;
    }
    counters_[kTxPackets] += 1;
    counters_[kTxBytes] += static_cast<double>(len + hl);
    return true;
  }

  // Queues a packet for the writer thread. An owned buffer is kept referenced until it is
  // written; any other is copied (it may be reused as soon as this call returns). A full
  // ring waits for the writer: the same wait a direct write would have spent in the kernel.
  void Defer(napi_value v, const VnetHdr* h, const uint8_t* head, uint32_t hl, const uint8_t* data, size_t len, bool owned) {
    EnsureWriter();
    ReleaseWritten();
    if (txHead_ - txReleased_ >= kTxSlots) {
      {
        std::unique_lock<std::mutex> lk(ringMu_);
        spaceCv_.wait(lk, [this] { return txHead_ - txWritten_.load(std::memory_order_acquire) < kTxSlots; });
      }
      ReleaseWritten();
    }
    TxEntry& e = txq_[txHead_ & (kTxSlots - 1)];
    e.hasVnet = h != nullptr;
    if (h) e.h = *h;
    e.headLen = static_cast<uint8_t>(hl);
    if (hl > 0) memcpy(e.head, head, hl);
    e.len = len;
    e.ref = nullptr;
    e.copy = nullptr;
    if (owned && napi_create_reference(env_, v, 1, &e.ref) == napi_ok) {
      e.data = data;
    } else {
      e.copy = static_cast<uint8_t*>(malloc(len > 0 ? len : 1));
      if (len > 0) memcpy(e.copy, data, len);
      e.data = e.copy;
    }
    counters_[kTxDeferred] += 1;
    bool wake;
    {
      std::lock_guard<std::mutex> lk(ringMu_);
      txHead_++;
      wake = writerIdle_;
    }
    if (wake) ringCv_.notify_one();
  }

  // JS thread: lets go of what the writer has written (the references to owned buffers, the copies).
  void ReleaseWritten() {
    uint64_t w = txWritten_.load(std::memory_order_acquire);
    for (; txReleased_ < w; txReleased_++) {
      TxEntry& e = txq_[txReleased_ & (kTxSlots - 1)];
      if (e.ref) napi_delete_reference(env_, e.ref);
      if (e.copy) free(e.copy);
      e.ref = nullptr;
      e.copy = nullptr;
    }
  }

  void EnsureWriter() {
    if (writer_.joinable()) return;
    ring_.resize(static_cast<size_t>(kDetachedSlots) * kSlotBytes);
    txq_.resize(kTxSlots);
    writerStop_ = false;
    writer_ = std::thread([this] { WriterLoop(); });
  }

  // setTxThread(on): large packets whose buffers the sender gives up (kOwnedFlag) are
  // written by this queue's writer thread, so that the kernel's work behind a TUN/TAP write
  // (the bridge, the receiver's whole TCP) runs on another core than JavaScript.
  Napi::Value SetTxThread(const Napi::CallbackInfo& info) {
    txThread_ = info.Length() > 0 && info[0].ToBoolean().Value();
    return info.Env().Undefined();
  }

  // sync(): the writer thread's counts into the counters, and its written buffers let go.
  Napi::Value Sync(const Napi::CallbackInfo& info) {
    CatchUpWriter();
    return info.Env().Undefined();
  }

  // JS thread: what the writer thread did since the last call (its counts, the buffers it
  // has written). Every write entry point and sync() start with it.
  void CatchUpWriter() {
    if (!writer_.joinable()) return;
    FoldWriterCounters();
    ReleaseWritten();
  }

  // ------------------------------------------------------------------------------------------
  // writeDetached(packets, count) -> packets queued for the writer thread (see the header).
  Napi::Value WriteDetached(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray()) return ThrowType(env, "writeDetached(packets, count)");
    Napi::Array pkts = info[0].As<Napi::Array>();
    uint32_t count = info[1].ToNumber().Uint32Value();
    if (count > pkts.Length()) count = pkts.Length();
    FoldWriterCounters();
    if (closed_) {
      counters_[kTxDrops] += count;
      return Napi::Number::New(env, 0);
    }
    EnsureWriter();
    uint32_t queued = 0;
    bool wake = false;
    {
      std::lock_guard<std::mutex> lk(ringMu_);
      for (uint32_t i = 0; i < count; i++) {
        napi_value v;
        if (napi_get_element(env, pkts, i, &v) != napi_ok) break;
        void* data = nullptr;
        size_t len = 0;
        if (napi_get_buffer_info(env, v, &data, &len) != napi_ok || len == 0 || len > kDetachedMax) {
          counters_[kTxErrors] += 1;
          counters_[kLastErrno] = EINVAL;
          continue;
        }
        if (ringHead_ - ringTail_ >= kDetachedSlots) {
          counters_[kTxDrops] += 1;
          continue;
        }
        uint8_t* slot = ring_.data() + static_cast<size_t>(ringHead_ & (kDetachedSlots - 1)) * kSlotBytes;
        slot[0] = static_cast<uint8_t>(len);
        memcpy(slot + 1, data, len);
        ringHead_++;
        queued++;
      }
      // A busy writer finds these on its next round: only a sleeping one costs a wake-up.
      wake = queued > 0 && writerIdle_;
    }
    if (wake) ringCv_.notify_one();
    return Napi::Number::New(env, queued);
  }

  // The writer thread: takes what is queued (detached packets, deferred writes), writes it
  // without the lock, repeats.
  void WriterLoop() {
    pthread_setname_np(pthread_self(), "fs-tun-tx");  // so that per-thread CPU shows it (bench)
    std::unique_lock<std::mutex> lk(ringMu_);
    for (;;) {
      writerIdle_ = true;
      ringCv_.wait(lk, [this] {
        return writerStop_ || ringHead_ != ringTail_ || txHead_ != txWritten_.load(std::memory_order_relaxed);
      });
      writerIdle_ = false;
      uint64_t txEnd = txHead_, txStart = txWritten_.load(std::memory_order_relaxed);
      if (ringHead_ == ringTail_ && txEnd == txStart && writerStop_) return;
      uint64_t head = ringHead_, tail = ringTail_;
      lk.unlock();
      uint64_t ok = 0, bytes = 0, drops = 0, errs = 0;
      int lastErr = 0;
      auto account = [&](ssize_t rc, size_t len) {
        if (rc < 0) {
          lastErr = errno;
          if (lastErr == EAGAIN || lastErr == EWOULDBLOCK || lastErr == ENOBUFS) drops++;
          else errs++;
        } else {
          ok++;
          bytes += len;
        }
      };
      for (uint64_t k = tail; k != head; k++) {
        // The producer never overwrites slots in [tail, head): ringTail_ moves after the writes.
        const uint8_t* slot = ring_.data() + static_cast<size_t>(k & (kDetachedSlots - 1)) * kSlotBytes;
        size_t len = slot[0];
        ssize_t rc;
        if (vnet_) {
          VnetHdr h;
          memset(&h, 0, sizeof h);
          struct iovec iov[2] = {{&h, sizeof h}, {const_cast<uint8_t*>(slot + 1), len}};
          do rc = writev(fd_, iov, 2);
          while (rc < 0 && errno == EINTR);
        } else {
          do rc = ::write(fd_, slot + 1, len);
          while (rc < 0 && errno == EINTR);
        }
        account(rc, len);
      }
      // Entries in [txStart, txEnd) are the producer's until txWritten_ passes them.
      for (uint64_t k = txStart; k != txEnd; k++) {
        TxEntry& e = txq_[k & (kTxSlots - 1)];
        struct iovec iov[3];
        int n = 0;
        if (e.hasVnet) iov[n++] = {&e.h, sizeof e.h};
        if (e.headLen > 0) iov[n++] = {e.head, e.headLen};
        iov[n++] = {const_cast<uint8_t*>(e.data), e.len};
        ssize_t rc;
        do rc = writev(fd_, iov, n);
        while (rc < 0 && errno == EINTR);
        account(rc, e.len + e.headLen);
      }
      wOk_.fetch_add(ok, std::memory_order_relaxed);
      wBytes_.fetch_add(bytes, std::memory_order_relaxed);
      wDrops_.fetch_add(drops, std::memory_order_relaxed);
      wErrs_.fetch_add(errs, std::memory_order_relaxed);
      if (lastErr) wLastErr_.store(lastErr, std::memory_order_relaxed);
      lk.lock();
      ringTail_ = head;
      txWritten_.store(txEnd, std::memory_order_release);
      spaceCv_.notify_all();
    }
  }

  // The writer's counts go into the shared counters on the JS thread (the array is not atomic).
  void FoldWriterCounters() {
    uint64_t ok = wOk_.exchange(0, std::memory_order_relaxed);
    uint64_t bytes = wBytes_.exchange(0, std::memory_order_relaxed);
    uint64_t drops = wDrops_.exchange(0, std::memory_order_relaxed);
    uint64_t errs = wErrs_.exchange(0, std::memory_order_relaxed);
    int le = wLastErr_.exchange(0, std::memory_order_relaxed);
    counters_[kTxPackets] += static_cast<double>(ok);
    counters_[kTxBytes] += static_cast<double>(bytes);
    counters_[kTxDrops] += static_cast<double>(drops);
    counters_[kTxErrors] += static_cast<double>(errs);
    if (le) counters_[kLastErrno] = le;
  }

  void StopWriter() {
    if (!writer_.joinable()) return;
    {
      std::lock_guard<std::mutex> lk(ringMu_);
      writerStop_ = true;
    }
    ringCv_.notify_one();
    writer_.join();  // it writes what is queued first: at most the rings, each a non-blocking write
    ReleaseWritten();
    if (counters_) FoldWriterCounters();
  }

  // Software receive checksum: without the virtio header (offloads off) nothing tells us the
  // kernel's checksums are good, and checking them in JavaScript was 14% of the stack's
  // time. With this on (TUN only: the IP header at the start of the packet), each TCP or
  // UDP checksum of an unfragmented IPv4 packet is checked right after its read, as a NIC's
  // receive checksum offload does, and a good one is marked DATA_VALID in the packet's info
  // (info[2]); anything else is left to JavaScript to check.
  Napi::Value SetRxChecksum(const Napi::CallbackInfo& info) {
    rxCsum_ = info.Length() > 0 && info[0].ToBoolean().Value();
    return info.Env().Undefined();
  }

  Napi::Value SetGro(const Napi::CallbackInfo& info) {
    gro_ = info.Length() > 0 && info[0].ToBoolean().Value() && !vnet_ && slotSize_ > 65535;
    return Napi::Boolean::New(info.Env(), gro_);
  }

  static uint32_t ReadBe32(const uint8_t* b) {
    return (static_cast<uint32_t>(b[0]) << 24) | (static_cast<uint32_t>(b[1]) << 16) | (static_cast<uint32_t>(b[2]) << 8) | b[3];
  }

  static void Ipv4HeaderChecksum(uint8_t* h) {
    h[10] = h[11] = 0;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (static_cast<uint32_t>(h[i]) << 8) | h[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    const uint16_t c = static_cast<uint16_t>(~sum);
    h[10] = static_cast<uint8_t>(c >> 8);
    h[11] = static_cast<uint8_t>(c & 0xff);
  }

  // One flow of the burst being read (GRO): its key, the slot of its head, the sequence
  // number a follower must start at, the head's payload size, and whether it still takes one.
  struct GroFlow {
    uint32_t saddr, daddr, ports, nextSeq, slot, mss;
    bool open;
  };

  // The burst's flow of the TCP packet `p` (IPv4, header length `ihl`, ports readable), or nullptr.
  GroFlow* GroFind(const uint8_t* p, size_t ihl, uint32_t* key) {
    memcpy(&key[0], p + 12, 4);
    memcpy(&key[1], p + 16, 4);
    memcpy(&key[2], p + ihl, 4);
    for (int i = 0; i < groCount_; i++) {
      GroFlow& g = groFlows_[i];
      if (g.saddr == key[0] && g.daddr == key[1] && g.ports == key[2]) return &g;
    }
    return nullptr;
  }

  // GRO (see the header): packet `p` of `len` bytes, read into slot n, for which
  // L4ChecksumGood held (so: IPv4, unfragmented, its total length within `len`). True when
  // it was appended to its flow's head (slot n is free again); otherwise it may become the
  // head of its flow for the packets after it.
  bool GroMerge(const uint8_t* p, size_t len, uint32_t n) {
    if (p[9] != 6) return false;
    const size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
    const uint8_t* t = p + ihl;
    uint32_t key[3];
    GroFlow* f = GroFind(p, ihl, key);
    const size_t total = (static_cast<size_t>(p[2]) << 8) | p[3];
    const size_t thl = static_cast<size_t>(t[12] >> 4) * 4;
    const uint8_t flags = t[13];
    const bool candidate = ihl == 20 && total == len && thl >= 20 && total > ihl + thl && (flags & ~0x08) == 0x10;
    if (!candidate) {
      if (f) f->open = false;  // nothing of this flow may be appended past it
      return false;
    }
    const uint32_t payload = static_cast<uint32_t>(total - ihl - thl);
    const uint32_t seq = ReadBe32(t + 4);
    if (f && f->open) {
      uint8_t* h = slotPtr_[f->slot];
      uint32_t* he = info_ + f->slot * kInfoStride;
      const size_t hlen = he[1];
      const uint8_t* ht = h + 20;
      if (seq == f->nextSeq && payload <= f->mss && hlen + payload <= 65535 && hlen + payload < slotSize_ && t[12] == ht[12] &&
          memcmp(t + 8, ht + 8, 4) == 0 && memcmp(t + 14, ht + 14, 2) == 0 && memcmp(t + 20, ht + 20, thl - 20) == 0 &&
          p[1] == h[1] && p[8] == h[8] && (p[6] & 0x40) == (h[6] & 0x40)) {
        memcpy(h + hlen, t + thl, payload);
        const size_t nl = hlen + payload;
        he[1] = static_cast<uint32_t>(nl);
        h[2] = static_cast<uint8_t>(nl >> 8);
        h[3] = static_cast<uint8_t>(nl & 0xff);
        Ipv4HeaderChecksum(h);
        if (flags & 0x08) h[20 + 13] |= 0x08;
        he[3] = kGsoTcpV4;
        he[4] = static_cast<uint32_t>(20 + thl);
        he[5] = f->mss;
        f->nextSeq = seq + payload;
        if (payload < f->mss || (flags & 0x08)) f->open = false;
        return true;
      }
    }
    if (!f) {
      if (groCount_ == kGroFlows) return false;
      f = &groFlows_[groCount_++];
      f->saddr = key[0];
      f->daddr = key[1];
      f->ports = key[2];
    }
    f->slot = n;
    f->nextSeq = seq + payload;
    f->mss = payload;
    f->open = !(flags & 0x08);
    return false;
  }

  // A packet that was not checked (or failed) still ends its flow's run: what follows it
  // must not be appended to a segment before it.
  void GroForget(const uint8_t* p, size_t len) {
    if (groCount_ == 0 || len < 40 || (p[0] >> 4) != 4 || p[9] != 6) return;
    const size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
    if (ihl < 20 || len < ihl + 4) return;
    uint32_t key[3];
    if (GroFlow* f = GroFind(p, ihl, key)) f->open = false;
  }

  // The packet's TCP or UDP checksum over the IPv4 pseudo-header (RFC 1071 sum, in native
  // byte order: an all-ones sum is all ones in either order). False for what we do not
  // check: not IPv4, a fragment, another protocol, UDP without a checksum, a bad length.
  static bool L4ChecksumGood(const uint8_t* p, size_t len) {
    const size_t ihl = UnfragmentedIpv4(p, len);
    if (ihl == 0) return false;
    const size_t total = (static_cast<size_t>(p[2]) << 8) | p[3];
    if (total < ihl || total > len) return false;
    const uint8_t proto = p[9];
    const size_t l4 = total - ihl;
    const uint8_t* t = p + ihl;
    if (proto == 6) {
      if (l4 < 20) return false;
    } else if (proto == 17) {
      if (l4 < 8 || (t[6] == 0 && t[7] == 0)) return false;
    } else {
      return false;
    }
    uint64_t sum = 0;
    uint32_t w;
    memcpy(&w, p + 12, 4);
    sum += w;
    memcpy(&w, p + 16, 4);
    sum += w;
    // Protocol and length, in the byte order the rest of the sum is read in.
    sum += htons(proto);
    sum += htons(static_cast<uint16_t>(l4));
    uint16_t be;
    size_t i = 0;
    for (; i + 4 <= l4; i += 4) {
      memcpy(&w, t + i, 4);
      sum += w;
    }
    if (i + 2 <= l4) {
      memcpy(&be, t + i, 2);
      sum += be;
      i += 2;
    }
    if (i < l4) {
      uint8_t last[2] = {t[i], 0};
      memcpy(&be, last, 2);
      sum += be;
    }
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
  }

  Napi::Value SetSynBudget(const Napi::CallbackInfo& info) {
    synBudget_ = info.Length() > 0 ? info[0].ToNumber().Uint32Value() : 0;
    if (synBudget_ > 0 && allow_.empty()) allow_.assign(kAllowSlots, 0);
    return info.Env().Undefined();
  }

  Napi::Value AllowSource(const Napi::CallbackInfo& info) {
    uint32_t a = info.Length() > 0 ? info[0].ToNumber().Uint32Value() : 0;
    if (allow_.empty()) allow_.assign(kAllowSlots, 0);
    allow_[AllowSlot(a)] = a;
    return info.Env().Undefined();
  }

  static uint32_t AllowSlot(uint32_t a) { return (a * 2654435761u) >> 16; }

  // A bare SYN (IPv4, first fragment of nothing: not fragmented; SYN set, ACK/RST/FIN clear)
  // from a source not in the allow table. `p` is the IP packet, `len` its length.
  // The header length of an IPv4 packet that is no fragment (MF clear, offset 0) and holds
  // its whole header; 0 for anything else.
  static size_t UnfragmentedIpv4(const uint8_t* p, size_t len) {
    if (len < 20 || (p[0] >> 4) != 4) return 0;
    const size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
    if (ihl < 20 || len < ihl) return 0;
    if (((p[6] & 0x3f) | p[7]) != 0) return 0;  // MF or a fragment offset
    return ihl;
  }

  bool UnverifiedBareSyn(const uint8_t* p, size_t len) const {
    const size_t ihl = UnfragmentedIpv4(p, len);
    if (ihl == 0 || p[9] != 6 || len < ihl + 20) return false;
    if ((p[ihl + 13] & 0x17) != 0x02) return false;  // FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10
    const uint32_t src = ReadBe32(p + 12);
    return allow_.empty() || allow_[AllowSlot(src)] != src;
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    Queue* q = static_cast<Queue*>(h->data);
    if (q) q->Readable(status);
  }

  // Bursts read per readable event at most. The kernel queues txqueuelen packets for us
  // (500 by default) and drops what comes past it; with one burst of `slots` per event-loop
  // turn we took 64 packets a turn while a sender's flight made the kernel answer with
  // hundreds of ACKs per turn, so the queue stayed full and a packet that mattered (a
  // TEST_END, a ping) seldom found room. Reading on until EAGAIN empties the queue each
  // turn; the bound (1024 packets with 64 slots) still lets timers and the writers run.
  static constexpr int kMaxBurstsPerEvent = 16;

  void Readable(int status) {
    if (closed_) return;
    if (status < 0) {
      Fatal(-status);
      return;
    }
    for (int b = 0; b < kMaxBurstsPerEvent; b++) {
      // false: the queue is empty (or the fd failed); true: more is waiting, read on.
      if (!ReadBurst()) return;
      if (closed_) return;
    }
  }

  // Reads one burst (up to `slots` packets) and hands it to JS in one call; true when more
  // was waiting in the kernel's queue (the burst stopped before EAGAIN: full slots, or the
  // early SYN drop's read bound), so the caller reads on.
  bool ReadBurst() {
    int fatal = 0;
    uint32_t n = ReadBurst(&fatal);
    if (n > 0) {
      CallJs(static_cast<int>(n));
      if (closed_) return false;  // close() from inside the callback
    }
    if (fatal) {
      Fatal(fatal);
      return false;
    }
    return backlogged_;
  }

  Napi::Value PollNow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_ || !poll_) return Napi::Number::New(env, 0);
    int fatal = 0;
    uint32_t n = ReadBurst(&fatal);
    if (fatal && n == 0) {
      counters_[kRxErrors] += 1;
      counters_[kLastErrno] = fatal;
      StopPoll();
      return Napi::Number::New(env, -fatal);
    }
    return Napi::Number::New(env, n);
  }

  // One read loop into the slots (see the header); a fatal errno goes to *fatal.
  uint32_t ReadBurst(int* fatalOut) {
    int fatal = 0;
    uint32_t n = 0;
    const uint32_t hdr = vnet_ ? kVnetHdrLen : 0;
    // Early SYN drop: only while backlogged, and the reads of one call stay bounded.
    const bool dropping = synBudget_ > 0 && backlogged_;
    uint32_t syns = 0, reads = 0;
    const uint32_t maxReads = slots_ * 4;
    bool drained = false;
    groCount_ = 0;
    while (n < slots_ && reads < maxReads) {
      uint8_t* slot = slotPtr_[n];
      ssize_t r = ::read(fd_, slot, slotSize_);
      reads++;
      counters_[kRxReadCalls] += 1;
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) { drained = true; break; }
        fatal = errno;
        break;
      }
      if (r == 0) {
        fatal = EBADFD;
        break;
      }
      // A packet that does not fit is cut to the buffer size (the rest is lost); slots are sized
      // one byte more than the largest legitimate packet, so a full slot means truncated.
      if (static_cast<size_t>(r) >= slotSize_) {
        counters_[kRxTruncated] += 1;
        continue;
      }
      if (static_cast<size_t>(r) <= hdr) {
        counters_[kRxErrors] += 1;
        continue;
      }
      // The budget renews every `slots_` reads: at most synBudget_ of each slots_ packets read.
      if (dropping && UnverifiedBareSyn(slot + hdr, static_cast<size_t>(r) - hdr)) {
        if (syns >= synBudget_ * (1 + (reads - 1) / slots_)) {
          counters_[kSynEarlyDrops] += 1;
          continue;  // the slot is read into again
        }
        syns++;  // SYNs handed on
      }
      uint32_t* e = info_ + n * kInfoStride;
      e[0] = hdr;
      e[1] = static_cast<uint32_t>(r) - hdr;
      if (vnet_) {
        VnetHdr vh;
        memcpy(&vh, slot, sizeof vh);
        e[2] = vh.flags;
        e[3] = vh.gso_type;
        e[4] = vh.hdr_len;
        e[5] = vh.gso_size;
        e[6] = vh.csum_start;
        e[7] = vh.csum_offset;
      } else {
        e[2] = e[3] = e[4] = e[5] = e[6] = e[7] = 0;
        if (rxCsum_ && L4ChecksumGood(slot, static_cast<size_t>(r))) {
          e[2] = kFDataValid;
          counters_[kRxCsumVerified] += 1;
          if (gro_ && GroMerge(slot, static_cast<size_t>(r), n)) {
            counters_[kRxGroMerged] += 1;
            continue;  // appended to its flow's head: slot n is read into again
          }
        } else if (gro_) {
          GroForget(slot, static_cast<size_t>(r));
        }
      }
      n++;
    }
    // More was waiting when this call stopped: the next call starts backlogged.
    backlogged_ = !drained && !fatal;
    *fatalOut = fatal;
    return n;
  }

  void Fatal(int err) {
    counters_[kRxErrors] += 1;
    counters_[kLastErrno] = err;
    StopPoll();  // level-triggered: a dead fd would spin otherwise
    CallJs(-err);
  }

  void CallJs(int arg) {
    Napi::Env env(env_);
    Napi::HandleScope scope(env);
    napi_value recv = Value();
    napi_value fn = cb_.Value();
    napi_value argv[1] = {Napi::Number::New(env, arg)};
    napi_value result;
    napi_status st = napi_make_callback(env, actx_, recv, fn, 1, argv, &result);
    if (st != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);  // -> process 'uncaughtException'
      }
    }
  }

  void StopPoll() {
    if (!poll_) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }

  void DoClose() {
    if (closed_) return;
    closed_ = true;
    StopWriter();  // before the fd goes: the writer thread writes to it
    StopPoll();
    if (fd_ >= 0 && ownsFd_) ::close(fd_);
    fd_ = -1;
    if (held_) {
      held_ = false;
      Unref();
    }
  }

  napi_env env_ = nullptr;
  uv_loop_t* loop_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  napi_async_context actx_ = nullptr;
  int fd_ = -1;
  bool vnet_ = false;
  bool ownsFd_ = true;
  bool closed_ = false;
  bool held_ = false;
  bool loopRef_ = true;
  uint8_t* slab_ = nullptr;
  std::vector<uint8_t*> slotPtr_;
  std::vector<Napi::Reference<Napi::Buffer<uint8_t>>> slotRefs_;
  uint32_t slotSize_ = 0;
  uint32_t slots_ = 0;
  uint32_t* info_ = nullptr;
  double* counters_ = nullptr;
  Napi::Reference<Napi::Buffer<uint8_t>> slabRef_;
  Napi::Reference<Napi::Uint32Array> infoRef_;
  Napi::Reference<Napi::Float64Array> countersRef_;
  Napi::FunctionReference cb_;
  // writeDetached's ring (slot: a length byte and the packet) and its writer thread.
  static constexpr size_t kSlotBytes = 1 + kDetachedMax + 7;
  std::vector<uint8_t> ring_;
  std::mutex ringMu_;
  std::condition_variable ringCv_;
  uint64_t ringHead_ = 0;
  uint64_t ringTail_ = 0;
  bool writerStop_ = false;
  bool writerIdle_ = false;
  // Early SYN drop (setSynBudget, allowSource).
  uint32_t synBudget_ = 0;
  bool backlogged_ = false;
  bool rxCsum_ = false;
  // GRO (setGro): the flows of the burst being read (GroFlow), and the slot of each one's head.
  static constexpr int kGroFlows = 8;
  GroFlow groFlows_[kGroFlows] = {};
  int groCount_ = 0;
  bool gro_ = false;
  std::vector<uint32_t> allow_;
  // Deferred writes (setTxThread): a packet for the writer thread, with the JS buffer it
  // keeps referenced (owned) or a copy.
  struct TxEntry {
    VnetHdr h;
    bool hasVnet;
    uint8_t headLen;
    uint8_t head[kHeadMax];
    const uint8_t* data;
    size_t len;
    napi_ref ref;
    uint8_t* copy;
  };
  std::vector<TxEntry> txq_;
  uint64_t txHead_ = 0;                 // queued so far (JS thread; changed under ringMu_)
  std::atomic<uint64_t> txWritten_{0};  // written so far (the writer, under ringMu_)
  uint64_t txReleased_ = 0;             // released so far (JS thread)
  std::condition_variable spaceCv_;
  bool txThread_ = false;
  std::thread writer_;
  std::atomic<uint64_t> wOk_{0}, wBytes_{0}, wDrops_{0}, wErrs_{0};
  std::atomic<int> wLastErr_{0};
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("setVnetHdrSize", Napi::Function::New(env, SetVnetHdrSize, "setVnetHdrSize"));
  exports.Set("setOffload", Napi::Function::New(env, SetOffload, "setOffload"));
  exports.Set("getIfFlags", Napi::Function::New(env, GetIfFlags, "getIfFlags"));
  exports.Set("ifExists", Napi::Function::New(env, IfExists, "ifExists"));
  exports.Set("getMtu", Napi::Function::New(env, GetMtu, "getMtu"));
  exports.Set("setMtu", Napi::Function::New(env, SetMtu, "setMtu"));
  exports.Set("getTxQueueLen", Napi::Function::New(env, GetTxQueueLen, "getTxQueueLen"));
  exports.Set("setTxQueueLen", Napi::Function::New(env, SetTxQueueLen, "setTxQueueLen"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("setSteeringBpf", Napi::Function::New(env, SetSteeringBpf, "setSteeringBpf"));
  exports.Set("Queue", Queue::Init(env));
  Napi::Object c = Napi::Object::New(env);
  c.Set("IFF_TUN", IFF_TUN);
  c.Set("IFF_TAP", IFF_TAP);
  c.Set("IFF_NO_PI", IFF_NO_PI);
  c.Set("IFF_VNET_HDR", IFF_VNET_HDR);
  c.Set("IFF_MULTI_QUEUE", IFF_MULTI_QUEUE);
  c.Set("IFF_PERSIST", IFF_PERSIST);
  c.Set("TUN_F_CSUM", TUN_F_CSUM);
  c.Set("TUN_F_TSO4", TUN_F_TSO4);
  c.Set("TUN_F_TSO6", TUN_F_TSO6);
  c.Set("TUN_F_TSO_ECN", TUN_F_TSO_ECN);
  c.Set("TUN_F_UFO", TUN_F_UFO);
  c.Set("TUN_F_USO4", TUN_F_USO4);
  c.Set("TUN_F_USO6", TUN_F_USO6);
  c.Set("VNET_HDR_LEN", kVnetHdrLen);
  exports.Set("constants", c);
  return exports;
}

}  // namespace

NODE_API_MODULE(faultstack_tun, Init)
