// 8-bit RGB images to files: PNG (stb_image_write) or binary PPM, chosen by the file name, written atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace elasticdit {

// `rgb` is height x width x 3. ".png" -> PNG, ".ppm" -> P6; any other suffix is Error(Usage).
void write_image(const std::string& path, const std::vector<uint8_t>& rgb, int64_t height, int64_t width);

}  // namespace elasticdit
