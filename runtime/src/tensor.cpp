#include "elasticdit/tensor.h"

#include <cstring>
#include <regex>
#include <sstream>

#include "elasticdit/errors.h"
#include "elasticdit/files.h"

namespace elasticdit {

const char* dtype_name(DType dtype) { return dtype == DType::Float32 ? "float32" : "int64"; }

DType parse_dtype(const std::string& name) {
  if (name == "float32") {
    return DType::Float32;
  }
  if (name == "int64") {
    return DType::Int64;
  }
  throw Error(ErrorKind::Shape, "dtype '" + name + "' is not supported (float32 and int64 are)");
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    out << (i ? ", " : "") << shape[i];
  }
  out << "]";
  return out.str();
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    n *= d;
  }
  return n;
}

Tensor Tensor::floats(std::vector<int64_t> shape, std::vector<float> data) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = DType::Float32;
  t.f32 = std::move(data);
  return t;
}

Tensor Tensor::ints(std::vector<int64_t> shape, std::vector<int64_t> data) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = DType::Int64;
  t.i64 = std::move(data);
  return t;
}

namespace {

const char kMagic[] = "\x93NUMPY";

uint32_t read_le(const std::string& bytes, size_t offset, size_t width) {
  uint32_t v = 0;
  for (size_t i = 0; i < width; ++i) {
    v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  }
  return v;
}

}  // namespace

Tensor read_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  auto bad = [&](const std::string& why) { return Error(ErrorKind::Io, path + " is not a usable .npy file: " + why); };
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0) {
    throw bad("no NumPy magic");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const size_t width = major == 1 ? 2 : 4;
  if (major < 1 || major > 3 || bytes.size() < 8 + width) {
    throw bad("unknown format version " + std::to_string(major));
  }
  const size_t header_len = read_le(bytes, 8, width);
  const size_t data_start = 8 + width + header_len;
  if (bytes.size() < data_start) {
    throw bad("truncated header");
  }
  const std::string header = bytes.substr(8 + width, header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']*)'"))) {
    throw bad("no 'descr' in the header");
  }
  const std::string descr = m[1];
  DType dtype;
  size_t item;
  if (descr == "<f4") {
    dtype = DType::Float32;
    item = 4;
  } else if (descr == "<i8") {
    dtype = DType::Int64;
    item = 8;
  } else {
    throw bad("dtype '" + descr + "' (float32 '<f4' or int64 '<i8' expected)");
  }
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True"))) {
    throw bad("Fortran order (save a C-contiguous array)");
  }
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([0-9,\\s]*)\\)"))) {
    throw bad("no 'shape' in the header");
  }
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  std::regex number("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    shape.push_back(std::stoll(it->str()));
  }
  const size_t expected = static_cast<size_t>(numel(shape)) * item;
  if (bytes.size() - data_start != expected) {
    throw bad("holds " + std::to_string(bytes.size() - data_start) + " data bytes, shape " + shape_string(shape) +
              " needs " + std::to_string(expected));
  }
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  if (dtype == DType::Float32) {
    t.f32.resize(static_cast<size_t>(numel(shape)));
    std::memcpy(t.f32.data(), bytes.data() + data_start, expected);
  } else {
    t.i64.resize(static_cast<size_t>(numel(shape)));
    std::memcpy(t.i64.data(), bytes.data() + data_start, expected);
  }
  return t;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  std::string dims;
  for (size_t i = 0; i < tensor.shape.size(); ++i) {
    dims += std::to_string(tensor.shape[i]) + (tensor.shape.size() == 1 || i + 1 < tensor.shape.size() ? "," : "");
    if (i + 1 < tensor.shape.size()) {
      dims += " ";
    }
  }
  std::string header = std::string("{'descr': '") + (tensor.dtype == DType::Float32 ? "<f4" : "<i8") +
                       "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  if (tensor.dtype == DType::Float32) {
    out.append(reinterpret_cast<const char*>(tensor.f32.data()), tensor.f32.size() * sizeof(float));
  } else {
    out.append(reinterpret_cast<const char*>(tensor.i64.data()), tensor.i64.size() * sizeof(int64_t));
  }
  write_file_atomic(path, out);
}

}  // namespace elasticdit
