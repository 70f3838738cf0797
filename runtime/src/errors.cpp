#include "elasticdit/errors.h"

namespace elasticdit {

const char* error_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage:
      return "UsageError";
    case ErrorKind::Bundle:
      return "BundleError";
    case ErrorKind::MissingMethod:
      return "MissingMethodError";
    case ErrorKind::Shape:
      return "ShapeError";
    case ErrorKind::Tokenizer:
      return "TokenizerError";
    case ErrorKind::Io:
      return "IoError";
    case ErrorKind::Runtime:
      return "RuntimeError";
  }
  return "Error";
}

int exit_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage:
      return 2;
    case ErrorKind::Bundle:
      return 3;
    case ErrorKind::MissingMethod:
      return 4;
    case ErrorKind::Shape:
      return 5;
    case ErrorKind::Tokenizer:
      return 6;
    case ErrorKind::Io:
      return 7;
    case ErrorKind::Runtime:
      return 1;
  }
  return 1;
}

}  // namespace elasticdit
