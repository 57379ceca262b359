{
  "targets": [
    {
      "target_name": "faultstack_aead",
      "sources": ["src/aead.cc"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-deprecated-declarations", "-O2"]
    }
  ]
}
