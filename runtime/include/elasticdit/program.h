// One ExecuTorch program (.pte) behind executorch::extension::Module: load it and its methods, check each
// method's signature against the manifest, run methods on host tensors (outputs copied out). A program exported
// with external weights is loaded together with its .ptd (never without: ExecuTorch 1.5.1 crashes then).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "elasticdit/manifest.h"
#include "elasticdit/tensor.h"

namespace executorch::extension::module {
class Module;
}

namespace elasticdit {

enum class LoadMode { Mmap, File };
LoadMode parse_load_mode(const std::string& name);  // "mmap" | "file", Error(Usage) otherwise

class Program {
 public:
  // data_path: the program's external weights file (.ptd), empty for a program holding its weights;
  // Error(Bundle) when it is named but absent
  Program(std::string path, std::string data_path, LoadMode mode);
  ~Program();
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  void load();                                 // the program header and segments; Error(Bundle)
  void load_method(const MethodEntry& entry);  // Error(MissingMethod), Error(Shape), Error(Bundle)
  bool has_method(const std::string& name) const;
  std::vector<std::string> method_names() const;
  std::vector<Tensor> run(const std::string& method, const std::vector<Tensor>& inputs);  // Error(Runtime)
  const std::string& path() const { return path_; }

 private:
  void check_signature(const MethodEntry& entry);
  std::string path_;
  std::unique_ptr<executorch::extension::module::Module> module_;
};

}  // namespace elasticdit
