#include "elasticdit/program.h"

#include <algorithm>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include "elasticdit/errors.h"
#include "elasticdit/files.h"
#include "elasticdit/platform.h"

namespace elasticdit {

namespace et = executorch::runtime;
using executorch::aten::ScalarType;
using executorch::extension::Module;

namespace {

std::string status(et::Error e) {
  std::string name = et::to_string(e);
  const std::string prefix = "Error::";
  if (name.rfind(prefix, 0) == 0) {
    name = name.substr(prefix.size());
  }
  char code[8];
  std::snprintf(code, sizeof(code), "0x%02x", static_cast<unsigned>(e));
  std::string detail = last_executorch_error();
  return name + " (" + code + ")" + (detail.empty() ? "" : ": " + detail);
}

ScalarType scalar_type(DType d) { return d == DType::Float32 ? ScalarType::Float : ScalarType::Long; }

const char* scalar_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Long:
      return "int64";
    case ScalarType::Int:
      return "int32";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Bool:
      return "bool";
    case ScalarType::Char:
      return "int8";
    case ScalarType::Byte:
      return "uint8";
    default:
      return "another dtype";
  }
}

}  // namespace

LoadMode parse_load_mode(const std::string& name) {
  if (name == "mmap") {
    return LoadMode::Mmap;
  }
  if (name == "file") {
    return LoadMode::File;
  }
  throw Error(ErrorKind::Usage, "--load-mode must be mmap or file, got '" + name + "'");
}

Program::Program(std::string path, std::string data_path, LoadMode mode) : path_(std::move(path)) {
  const auto load_mode = mode == LoadMode::Mmap ? Module::LoadMode::Mmap : Module::LoadMode::File;
  if (data_path.empty()) {
    module_ = std::make_unique<Module>(path_, load_mode);
    return;
  }
  if (!is_file(data_path)) {  // ExecuTorch would crash in load_method, not fail
    throw Error(ErrorKind::Bundle, path_ + " keeps its weights in " + data_path + ", which is missing");
  }
  module_ = std::make_unique<Module>(path_, data_path, load_mode);
}

Program::~Program() = default;

void Program::load() {
  const et::Error e = module_->load();
  if (e != et::Error::Ok) {
    throw Error(ErrorKind::Bundle, "ExecuTorch cannot load " + path_ + ": " + status(e));
  }
}

bool Program::has_method(const std::string& name) const {
  auto names = module_->method_names();
  return names.ok() && names->count(name) > 0;
}

std::vector<std::string> Program::method_names() const {
  auto names = module_->method_names();
  if (!names.ok()) {
    throw Error(ErrorKind::Bundle, "ExecuTorch cannot list the methods of " + path_ + ": " + status(names.error()));
  }
  std::vector<std::string> sorted(names->begin(), names->end());
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

void Program::check_signature(const MethodEntry& entry) {
  auto meta = module_->method_meta(entry.method);
  if (!meta.ok()) {
    throw Error(ErrorKind::Bundle, "no metadata for method " + entry.method + ": " + status(meta.error()));
  }
  if (meta->num_inputs() != entry.inputs.size()) {
    throw Error(ErrorKind::Shape, "method " + entry.method + " takes " + std::to_string(meta->num_inputs()) +
                                      " inputs, the manifest lists " + std::to_string(entry.inputs.size()));
  }
  for (size_t i = 0; i < entry.inputs.size(); ++i) {
    const TensorSpec& spec = entry.inputs[i];
    auto info = meta->input_tensor_meta(i);
    if (!info.ok()) {
      throw Error(ErrorKind::Shape, "method " + entry.method + " input " + std::to_string(i) + " is not a tensor");
    }
    std::vector<int64_t> sizes(info->sizes().begin(), info->sizes().end());
    if (sizes != spec.shape) {
      throw Error(ErrorKind::Shape, "method " + entry.method + " input '" + spec.name + "': the manifest says " +
                                        shape_string(spec.shape) + ", the program takes " + shape_string(sizes));
    }
    if (info->scalar_type() != scalar_type(spec.dtype)) {
      throw Error(ErrorKind::Shape, "method " + entry.method + " input '" + spec.name + "': the manifest says " +
                                        dtype_name(spec.dtype) + ", the program takes " +
                                        scalar_name(info->scalar_type()));
    }
  }
}

void Program::load_method(const MethodEntry& entry) {
  if (!has_method(entry.method)) {
    std::string known;
    for (const std::string& n : method_names()) {
      known += (known.empty() ? "" : ", ") + n;
    }
    throw Error(ErrorKind::MissingMethod,
                path_ + " has no method '" + entry.method + "' (the manifest names it; the program has " + known + ")");
  }
  check_signature(entry);
  const et::Error e = module_->load_method(entry.method);
  if (e != et::Error::Ok) {
    throw Error(ErrorKind::Bundle, "ExecuTorch cannot load method " + entry.method + ": " + status(e));
  }
}

std::vector<Tensor> Program::run(const std::string& method, const std::vector<Tensor>& inputs) {
  std::vector<executorch::extension::TensorPtr> held;
  std::vector<et::EValue> values;
  for (const Tensor& t : inputs) {
    std::vector<executorch::aten::SizesType> sizes(t.shape.begin(), t.shape.end());
    void* data = t.dtype == DType::Float32 ? static_cast<void*>(const_cast<float*>(t.f32.data()))
                                           : static_cast<void*>(const_cast<int64_t*>(t.i64.data()));
    held.push_back(executorch::extension::from_blob(data, sizes, scalar_type(t.dtype)));
    values.emplace_back(*held.back());
  }
  auto result = module_->execute(method, values);
  if (!result.ok()) {
    throw Error(ErrorKind::Runtime, "method " + method + " failed: " + status(result.error()));
  }
  std::vector<Tensor> outputs;
  for (const et::EValue& v : *result) {
    if (!v.isTensor()) {
      continue;
    }
    const auto& t = v.toTensor();
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    if (t.scalar_type() == ScalarType::Float) {
      const float* p = t.const_data_ptr<float>();
      outputs.push_back(Tensor::floats(shape, std::vector<float>(p, p + t.numel())));
    } else if (t.scalar_type() == ScalarType::Long) {
      const int64_t* p = t.const_data_ptr<int64_t>();
      outputs.push_back(Tensor::ints(shape, std::vector<int64_t>(p, p + t.numel())));
    } else {
      throw Error(ErrorKind::Runtime, "method " + method + " returned a " + scalar_name(t.scalar_type()) +
                                          " tensor (float32 or int64 expected)");
    }
  }
  return outputs;
}

}  // namespace elasticdit
