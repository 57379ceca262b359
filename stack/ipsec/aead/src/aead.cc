// faultstack_aead: AES-GCM (RFC 4106 for ESP) with one cipher context per key, for the
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
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Gcm", Gcm::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(faultstack_aead, Init)
