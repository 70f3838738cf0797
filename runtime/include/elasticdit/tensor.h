// A host tensor: contiguous float32 or int64 data with its shape. What the pipeline hands to and takes from
// ExecuTorch methods (copied in and out: a method's outputs live in its planned memory until its next run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace elasticdit {

enum class DType { Float32, Int64 };

const char* dtype_name(DType dtype);          // "float32", "int64"
DType parse_dtype(const std::string& name);  // throws Error(Shape) for any other dtype

std::string shape_string(const std::vector<int64_t>& shape);  // "[1, 16, 32, 32]"
int64_t numel(const std::vector<int64_t>& shape);

struct Tensor {
  std::vector<int64_t> shape;
  DType dtype = DType::Float32;
  std::vector<float> f32;    // when dtype == Float32
  std::vector<int64_t> i64;  // when dtype == Int64

  static Tensor floats(std::vector<int64_t> shape, std::vector<float> data);
  static Tensor ints(std::vector<int64_t> shape, std::vector<int64_t> data);
  int64_t numel() const { return elasticdit::numel(shape); }
};

// NumPy .npy files (format 1.0-3.0, little-endian '<f4' or '<i8', C order). Never anything that needs
// unpickling: object arrays are refused.
Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const Tensor& tensor);

}  // namespace elasticdit
