// Named errors of the elasticdit runtime. The command line prints one line, `error: <Name>: <message>`, and
// exits with the kind's code, so a caller (the Python wrapper, an app's logs) can tell them apart.
#pragma once

#include <stdexcept>
#include <string>

namespace elasticdit {

enum class ErrorKind {
  Usage,          // bad command-line arguments or options
  Bundle,         // the bundle folder, its manifest or its program is malformed or cannot be loaded
  MissingMethod,  // the program lacks a method the manifest names
  Shape,          // an input (manifest spec, noise file) does not have the shape or dtype the method takes
  Tokenizer,      // the prompt cannot be tokenized with the bundle's tokenizer
  Io,             // a file cannot be read or written
  Runtime,        // ExecuTorch failed while executing a method
};

const char* error_name(ErrorKind kind);
int exit_code(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace elasticdit
