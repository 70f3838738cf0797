#include "elasticdit/image.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>

#include "elasticdit/errors.h"
#include "elasticdit/files.h"

namespace elasticdit {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void append(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

}  // namespace

void write_image(const std::string& path, const std::vector<uint8_t>& rgb, int64_t height, int64_t width) {
  std::string bytes;
  if (ends_with(path, ".png")) {
    const int ok = stbi_write_png_to_func(append, &bytes, static_cast<int>(width), static_cast<int>(height), 3,
                                          rgb.data(), static_cast<int>(width * 3));
    if (!ok) {
      throw Error(ErrorKind::Io, "cannot encode " + path + " as PNG");
    }
  } else if (ends_with(path, ".ppm")) {
    bytes = "P6\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n";
    bytes.append(reinterpret_cast<const char*>(rgb.data()), rgb.size());
  } else {
    throw Error(ErrorKind::Usage, "the output image must end in .png or .ppm, got " + path);
  }
  write_file_atomic(path, bytes);
}

}  // namespace elasticdit
