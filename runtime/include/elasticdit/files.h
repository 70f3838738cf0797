// Small file helpers shared by the runtime: whole-file reads and writes that never leave a half-written file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace elasticdit {

std::string read_file(const std::string& path);  // throws Error(Io)
bool is_file(const std::string& path);
bool is_dir(const std::string& path);
int64_t file_size(const std::string& path);  // -1 when missing
std::string join_path(const std::string& dir, const std::string& name);

// Writes to a temporary file beside `path`, then renames it into place (throws Error(Io)).
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace elasticdit
