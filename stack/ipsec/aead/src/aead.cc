// faultstack_aead: AES-GCM (RFC 4106 for ESP) and AES-CBC + HMAC (RFC 3602, 4868) with
// one cipher (and HMAC) context per key, for the
// ESP data path. node:crypto builds a new cipher context (and fetches the algorithm) for
// every createCipheriv, which is most of the cost of a 1.4 KB packet; here the key is
// scheduled once and each packet only sets its nonce (EVP_EncryptInit_ex with the
// cipher and key left NULL), then runs in place in the caller's buffer: no allocation,
// no copy. The OpenSSL is the one node itself is built with (its symbols are exported
// by the node binary, its headers are in node's include directory).
//
// Exports
//   Gcm(key: Buffer)            16, 24 or 32 bytes: AES-128/192/256-GCM, 12-byte nonces
//     .seal(nonce, aad, aadLen, buf, off, len, tagOff)  encrypts buf[off, off+len) in
//                                place, writes the 16-byte tag at buf[tagOff]; -> true
//     .open(nonce, aad, aadLen, src, off, len, tagOff, dst, dstOff) decrypts
//                                src[off, off+len) into dst[dstOff..] (may be src) and
//                                checks the tag at src[tagOff]; -> false on a bad tag
#include <napi.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace {

class Gcm : public Napi::ObjectWrap<Gcm> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Gcm", {InstanceMethod("seal", &Gcm::Seal), InstanceMethod("open", &Gcm::Open)});
  }

  explicit Gcm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Gcm>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsBuffer()) { Napi::TypeError::New(env, "Gcm(key: Buffer)").ThrowAsJavaScriptException(); return; }
    auto key = info[0].As<Napi::Buffer<uint8_t>>();
    const EVP_CIPHER* c = nullptr;
    switch (key.Length()) {
      case 16: c = EVP_aes_128_gcm(); break;
      case 24: c = EVP_aes_192_gcm(); break;
      case 32: c = EVP_aes_256_gcm(); break;
      default: Napi::RangeError::New(env, "AES-GCM key must be 16, 24 or 32 bytes").ThrowAsJavaScriptException(); return;
    }
    enc_ = EVP_CIPHER_CTX_new();
    dec_ = EVP_CIPHER_CTX_new();
    if (!enc_ || !dec_ ||
        EVP_EncryptInit_ex(enc_, c, nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(enc_, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) != 1 ||
        EVP_EncryptInit_ex(enc_, nullptr, nullptr, key.Data(), nullptr) != 1 ||
        EVP_DecryptInit_ex(dec_, c, nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(dec_, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) != 1 ||
        EVP_DecryptInit_ex(dec_, nullptr, nullptr, key.Data(), nullptr) != 1) {
      Napi::Error::New(env, "OpenSSL could not set up AES-GCM").ThrowAsJavaScriptException();
    }
  }

  ~Gcm() override {
    if (enc_) EVP_CIPHER_CTX_free(enc_);
    if (dec_) EVP_CIPHER_CTX_free(dec_);
  }

 private:
  // Arguments are checked for type and bounds here: a wrong offset from JS must not
  // become a write outside the buffer.
  static bool Range(const Napi::Buffer<uint8_t>& b, int64_t off, int64_t len) {
    return off >= 0 && len >= 0 && off + len <= static_cast<int64_t>(b.Length());
  }

  Napi::Value Seal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 7 || !info[0].IsBuffer() || !info[1].IsBuffer() || !info[3].IsBuffer()) {
      Napi::TypeError::New(env, "seal(nonce, aad, aadLen, buf, off, len, tagOff)").ThrowAsJavaScriptException();
      return env.Null();
    }
    auto nonce = info[0].As<Napi::Buffer<uint8_t>>();
    auto aad = info[1].As<Napi::Buffer<uint8_t>>();
    int64_t aadLen = info[2].As<Napi::Number>().Int64Value();
    auto buf = info[3].As<Napi::Buffer<uint8_t>>();
    int64_t off = info[4].As<Napi::Number>().Int64Value();
    int64_t len = info[5].As<Napi::Number>().Int64Value();
    int64_t tagOff = info[6].As<Napi::Number>().Int64Value();
    if (nonce.Length() < 12 || !Range(aad, 0, aadLen) || !Range(buf, off, len) || !Range(buf, tagOff, 16) || len > INT32_MAX) {
      Napi::RangeError::New(env, "seal: nonce, aad or buffer range out of bounds").ThrowAsJavaScriptException();
      return env.Null();
    }
    int n = 0;
    uint8_t* p = buf.Data();
    bool ok = EVP_EncryptInit_ex(enc_, nullptr, nullptr, nullptr, nonce.Data()) == 1 &&
              (aadLen == 0 || EVP_EncryptUpdate(enc_, nullptr, &n, aad.Data(), static_cast<int>(aadLen)) == 1) &&
              EVP_EncryptUpdate(enc_, p + off, &n, p + off, static_cast<int>(len)) == 1 &&
              EVP_EncryptFinal_ex(enc_, p + off + n, &n) == 1 &&
              EVP_CIPHER_CTX_ctrl(enc_, EVP_CTRL_GCM_GET_TAG, 16, p + tagOff) == 1;
    return Napi::Boolean::New(env, ok);
  }

  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 9 || !info[0].IsBuffer() || !info[1].IsBuffer() || !info[3].IsBuffer() || !info[7].IsBuffer()) {
      Napi::TypeError::New(env, "open(nonce, aad, aadLen, src, off, len, tagOff, dst, dstOff)").ThrowAsJavaScriptException();
      return env.Null();
    }
    auto nonce = info[0].As<Napi::Buffer<uint8_t>>();
    auto aad = info[1].As<Napi::Buffer<uint8_t>>();
    int64_t aadLen = info[2].As<Napi::Number>().Int64Value();
    auto src = info[3].As<Napi::Buffer<uint8_t>>();
    int64_t off = info[4].As<Napi::Number>().Int64Value();
    int64_t len = info[5].As<Napi::Number>().Int64Value();
    int64_t tagOff = info[6].As<Napi::Number>().Int64Value();
    auto dst = info[7].As<Napi::Buffer<uint8_t>>();
    int64_t dstOff = info[8].As<Napi::Number>().Int64Value();
    if (nonce.Length() < 12 || !Range(aad, 0, aadLen) || !Range(src, off, len) || !Range(src, tagOff, 16) || !Range(dst, dstOff, len) || len > INT32_MAX) {
      Napi::RangeError::New(env, "open: nonce, aad or buffer range out of bounds").ThrowAsJavaScriptException();
      return env.Null();
    }
    uint8_t tag[16];
    memcpy(tag, src.Data() + tagOff, 16);  // the tag may lie where dst is written
    int n = 0;
    uint8_t* q = dst.Data() + dstOff;
    bool ok = EVP_DecryptInit_ex(dec_, nullptr, nullptr, nullptr, nonce.Data()) == 1 &&
              (aadLen == 0 || EVP_DecryptUpdate(dec_, nullptr, &n, aad.Data(), static_cast<int>(aadLen)) == 1) &&
              EVP_DecryptUpdate(dec_, q, &n, src.Data() + off, static_cast<int>(len)) == 1 &&
              EVP_CIPHER_CTX_ctrl(dec_, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
              EVP_DecryptFinal_ex(dec_, q + n, &n) == 1;
    return Napi::Boolean::New(env, ok);
  }

  EVP_CIPHER_CTX* enc_ = nullptr;
  EVP_CIPHER_CTX* dec_ = nullptr;
};

class CbcHmac : public Napi::ObjectWrap<CbcHmac> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "CbcHmac", {InstanceMethod("seal", &CbcHmac::Seal), InstanceMethod("open", &CbcHmac::Open)});
  }

  explicit CbcHmac(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CbcHmac>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsString() || !info[2].IsBuffer()) {
      Napi::TypeError::New(env, "CbcHmac(encKey: Buffer, hash: string, integKey: Buffer)").ThrowAsJavaScriptException();
      return;
    }
    auto key = info[0].As<Napi::Buffer<uint8_t>>();
    std::string hash = info[1].As<Napi::String>().Utf8Value();
    auto ikey = info[2].As<Napi::Buffer<uint8_t>>();
    const EVP_CIPHER* c = nullptr;
    switch (key.Length()) {
      case 16: c = EVP_aes_128_cbc(); break;
      case 24: c = EVP_aes_192_cbc(); break;
      case 32: c = EVP_aes_256_cbc(); break;
      default: Napi::RangeError::New(env, "AES-CBC key must be 16, 24 or 32 bytes").ThrowAsJavaScriptException(); return;
    }
    const EVP_MD* md = hash == "sha1" ? EVP_sha1() : hash == "sha256" ? EVP_sha256() : hash == "sha384" ? EVP_sha384() : hash == "sha512" ? EVP_sha512() : nullptr;
    if (!md) { Napi::RangeError::New(env, "hash must be sha1, sha256, sha384 or sha512").ThrowAsJavaScriptException(); return; }
    mdSize_ = EVP_MD_size(md);
    enc_ = EVP_CIPHER_CTX_new();
    dec_ = EVP_CIPHER_CTX_new();
    mac_ = HMAC_CTX_new();
    if (!enc_ || !dec_ || !mac_ ||
        EVP_EncryptInit_ex(enc_, c, nullptr, key.Data(), nullptr) != 1 || EVP_CIPHER_CTX_set_padding(enc_, 0) != 1 ||
        EVP_DecryptInit_ex(dec_, c, nullptr, key.Data(), nullptr) != 1 || EVP_CIPHER_CTX_set_padding(dec_, 0) != 1 ||
        HMAC_Init_ex(mac_, ikey.Data(), static_cast<int>(ikey.Length()), md, nullptr) != 1) {
      Napi::Error::New(env, "OpenSSL could not set up AES-CBC with HMAC").ThrowAsJavaScriptException();
    }
  }

  ~CbcHmac() override {
    if (enc_) EVP_CIPHER_CTX_free(enc_);
    if (dec_) EVP_CIPHER_CTX_free(dec_);
    if (mac_) HMAC_CTX_free(mac_);
  }

 private:
  static bool Range(const Napi::Buffer<uint8_t>& b, int64_t off, int64_t len) {
    return off >= 0 && len >= 0 && off + len <= static_cast<int64_t>(b.Length());
  }

  // HMAC over p[from, to) and the ESN high half, when there is one; the key stays from Init.
  bool Mac(const uint8_t* p, int64_t from, int64_t to, int64_t seqHigh, uint8_t* out) {
    unsigned int n = 0;
    uint8_t hi[4];
    if (seqHigh >= 0) { hi[0] = seqHigh >> 24; hi[1] = seqHigh >> 16; hi[2] = seqHigh >> 8; hi[3] = seqHigh; }
    return HMAC_Init_ex(mac_, nullptr, 0, nullptr, nullptr) == 1 &&
           HMAC_Update(mac_, p + from, static_cast<size_t>(to - from)) == 1 &&
           (seqHigh < 0 || HMAC_Update(mac_, hi, 4) == 1) &&
           HMAC_Final(mac_, out, &n) == 1;
  }

  Napi::Value Seal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 8 || !info[0].IsBuffer()) {
      Napi::TypeError::New(env, "seal(buf, hdrOff, ivOff, ctOff, len, icvOff, icvLen, seqHigh)").ThrowAsJavaScriptException();
      return env.Null();
    }
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    int64_t hdr = info[1].As<Napi::Number>().Int64Value(), iv = info[2].As<Napi::Number>().Int64Value();
    int64_t ct = info[3].As<Napi::Number>().Int64Value(), len = info[4].As<Napi::Number>().Int64Value();
    int64_t icv = info[5].As<Napi::Number>().Int64Value(), icvLen = info[6].As<Napi::Number>().Int64Value();
    int64_t seqHigh = info[7].As<Napi::Number>().Int64Value();
    if (!Range(buf, iv, 16) || !Range(buf, ct, len) || hdr < 0 || hdr > ct || len % 16 != 0 || len > INT32_MAX ||
        icvLen < 0 || icvLen > mdSize_ || !Range(buf, icv, icvLen)) {
      Napi::RangeError::New(env, "seal: buffer range out of bounds, or not whole blocks").ThrowAsJavaScriptException();
      return env.Null();
    }
    uint8_t* p = buf.Data();
    uint8_t md[EVP_MAX_MD_SIZE];
    int n = 0;
    bool ok = EVP_EncryptInit_ex(enc_, nullptr, nullptr, nullptr, p + iv) == 1 &&
              EVP_EncryptUpdate(enc_, p + ct, &n, p + ct, static_cast<int>(len)) == 1 &&
              EVP_EncryptFinal_ex(enc_, p + ct + n, &n) == 1 &&
              Mac(p, hdr, ct + len, seqHigh, md);
    if (ok) memcpy(p + icv, md, static_cast<size_t>(icvLen));
    return Napi::Boolean::New(env, ok);
  }

  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 10 || !info[0].IsBuffer() || !info[8].IsBuffer()) {
      Napi::TypeError::New(env, "open(src, hdrOff, ivOff, ctOff, len, icvOff, icvLen, seqHigh, dst, dstOff)").ThrowAsJavaScriptException();
      return env.Null();
    }
    auto src = info[0].As<Napi::Buffer<uint8_t>>();
    int64_t hdr = info[1].As<Napi::Number>().Int64Value(), iv = info[2].As<Napi::Number>().Int64Value();
    int64_t ct = info[3].As<Napi::Number>().Int64Value(), len = info[4].As<Napi::Number>().Int64Value();
    int64_t icv = info[5].As<Napi::Number>().Int64Value(), icvLen = info[6].As<Napi::Number>().Int64Value();
    int64_t seqHigh = info[7].As<Napi::Number>().Int64Value();
    auto dst = info[8].As<Napi::Buffer<uint8_t>>();
    int64_t dstOff = info[9].As<Napi::Number>().Int64Value();
    if (!Range(src, iv, 16) || !Range(src, ct, len) || hdr < 0 || hdr > ct || len % 16 != 0 || len > INT32_MAX ||
        icvLen < 0 || icvLen > mdSize_ || !Range(src, icv, icvLen) || !Range(dst, dstOff, len)) {
      Napi::RangeError::New(env, "open: buffer range out of bounds, or not whole blocks").ThrowAsJavaScriptException();
      return env.Null();
    }
    const uint8_t* p = src.Data();
    uint8_t md[EVP_MAX_MD_SIZE];
    if (!Mac(p, hdr, ct + len, seqHigh, md) || CRYPTO_memcmp(md, p + icv, static_cast<size_t>(icvLen)) != 0) return Napi::Boolean::New(env, false);
    uint8_t ivCopy[16];
    memcpy(ivCopy, p + iv, 16);  // dst may overlap the IV
    int n = 0;
    uint8_t* q = dst.Data() + dstOff;
    bool ok = EVP_DecryptInit_ex(dec_, nullptr, nullptr, nullptr, ivCopy) == 1 &&
              EVP_DecryptUpdate(dec_, q, &n, p + ct, static_cast<int>(len)) == 1 &&
              EVP_DecryptFinal_ex(dec_, q + n, &n) == 1;
    return Napi::Boolean::New(env, ok);
  }

  EVP_CIPHER_CTX* enc_ = nullptr;
  EVP_CIPHER_CTX* dec_ = nullptr;
  HMAC_CTX* mac_ = nullptr;
  int mdSize_ = 0;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Gcm", Gcm::Init(env));
  exports.Set("CbcHmac", CbcHmac::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(faultstack_aead, Init)
