#include "elasticdit/manifest.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "elasticdit/errors.h"
#include "elasticdit/files.h"
#include "elasticdit/tokenizer.h"

namespace elasticdit {

using nlohmann::json;

namespace {

constexpr const char* kFormat = "elasticdit-bundle";
constexpr int kVersion = 1;

struct Reader {
  std::string where;  // the manifest path, for messages

  Error bad(const std::string& what) const { return Error(ErrorKind::Bundle, where + ": " + what); }

  const json& at(const json& obj, const char* key, const std::string& context) const {
    if (!obj.is_object() || !obj.contains(key)) {
      throw bad(context + " lacks '" + key + "'");
    }
    return obj.at(key);
  }

  std::string str(const json& obj, const char* key, const std::string& context) const {
    const json& v = at(obj, key, context);
    if (!v.is_string()) {
      throw bad(context + " '" + key + "' is not a string");
    }
    return v.get<std::string>();
  }

  double number(const json& obj, const char* key, const std::string& context) const {
    const json& v = at(obj, key, context);
    if (!v.is_number()) {
      throw bad(context + " '" + key + "' is not a number");
    }
    return v.get<double>();
  }

  std::vector<int64_t> shape(const json& v, const std::string& context) const {
    if (!v.is_array()) {
      throw bad(context + " shape is not a list");
    }
    std::vector<int64_t> out;
    for (const json& d : v) {
      if (!d.is_number_integer() || d.get<int64_t>() <= 0) {
        throw bad(context + " shape has a non-positive or non-integer size");
      }
      out.push_back(d.get<int64_t>());
    }
    return out;
  }

  std::vector<TensorSpec> specs(const json& entry, const char* key, const std::string& context) const {
    const json& list = at(entry, key, context);
    if (!list.is_array()) {
      throw bad(context + " '" + key + "' is not a list");
    }
    std::vector<TensorSpec> out;
    for (const json& s : list) {
      TensorSpec spec;
      spec.name = str(s, "name", context + " " + key);
      spec.shape = shape(at(s, "shape", context + " " + key), context + " " + spec.name);
      const std::string dtype = s.contains("dtype") ? s.at("dtype").get<std::string>() : "float32";
      if (dtype != "float32" && dtype != "int64") {
        throw bad(context + " " + spec.name + " has dtype " + dtype + " (float32 and int64 are supported)");
      }
      spec.dtype = parse_dtype(dtype);
      out.push_back(spec);
    }
    return out;
  }

  void method(const json& entry, MethodEntry& out, const std::string& context) const {
    out.method = str(entry, "method", context);
    out.file = str(entry, "file", context);
    if (out.file.empty() || out.file.find("..") != std::string::npos || out.file[0] == '/') {
      throw bad(context + " names file '" + out.file + "' outside the bundle");
    }
    if (entry.contains("data_file") && !entry.at("data_file").is_null()) {
      out.data_file = str(entry, "data_file", context);
      if (out.data_file.empty() || out.data_file.find("..") != std::string::npos || out.data_file[0] == '/') {
        throw bad(context + " names data file '" + out.data_file + "' outside the bundle");
      }
    }
    out.inputs = specs(entry, "inputs", context + " " + out.method);
    out.outputs = specs(entry, "outputs", context + " " + out.method);
    if (entry.contains("resolution") && !entry.at("resolution").is_null()) {
      const Resolution r = resolution(entry.at("resolution"), context + " " + out.method + " 'resolution'");
      out.height = r.height;
      out.width = r.width;
    }
  }

  Resolution resolution(const json& v, const std::string& context) const {
    if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer() ||
        v[0].get<int64_t>() <= 0 || v[1].get<int64_t>() <= 0) {
      throw bad(context + " is not [height, width]");
    }
    return {v[0].get<int64_t>(), v[1].get<int64_t>()};
  }
};

}  // namespace

const TensorSpec& MethodEntry::input(const std::string& name) const {
  for (const TensorSpec& s : inputs) {
    if (s.name == name) {
      return s;
    }
  }
  throw Error(ErrorKind::Bundle, "method " + method + " has no input '" + name + "' in the manifest");
}

const PointEntry& Manifest::point(const std::string& name) const {
  std::string valid;
  for (const PointEntry& p : points) {
    if (p.name == name) {
      return p;
    }
    valid += (valid.empty() ? "" : ", ") + p.name;
  }
  throw Error(ErrorKind::Usage, "unknown operating point '" + name + "'; valid: " + valid);
}

std::string Manifest::path_of(const std::string& file) const { return join_path(bundle_dir, file); }

Manifest Manifest::at_resolution(const Resolution& r) const {
  std::string have;
  bool held = false;
  for (const Resolution& h : resolutions) {
    held = held || h == r;
    have += (have.empty() ? "" : ", ") + h.text();
  }
  if (!held) {
    throw Error(ErrorKind::Usage, "the bundle has no methods for " + r.text() + "; it has " + have);
  }
  Manifest m = *this;
  m.height = r.height;
  m.width = r.width;
  m.points.clear();
  for (const PointEntry& p : all_points) {
    if (Resolution{p.height, p.width} == r) {
      m.points.push_back(p);
    }
  }
  if (m.points.empty()) {
    throw Error(ErrorKind::Bundle, bundle_dir + ": the manifest lists " + r.text() + " but no operating point at it");
  }
  m.decoder.reset();
  for (const MethodEntry& d : decoders) {
    if (Resolution{d.height, d.width} == r) {
      m.decoder = d;
      break;
    }
  }
  return m;
}

Resolution parse_resolution(const std::string& text) {
  const size_t x = text.find('x');
  auto part = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) {
      return 0;
    }
    return std::stoll(s);
  };
  const Resolution r = x == std::string::npos ? Resolution{} : Resolution{part(text.substr(0, x)), part(text.substr(x + 1))};
  if (r.height <= 0 || r.width <= 0) {
    throw Error(ErrorKind::Usage, "--resolution takes HEIGHTxWIDTH in pixels (e.g. 1024x1024), got '" + text + "'");
  }
  return r;
}

Schedule Manifest::schedule(const std::string& name_or_spec, int steps) const {
  auto it = schedules.find(name_or_spec);
  Schedule s = Schedule::from_phases(it != schedules.end() ? it->second : parse_schedule_spec(name_or_spec), steps);
  for (const std::string& p : s.points) {
    point(p);  // Error(Usage) naming the valid points
  }
  return s;
}

Manifest read_manifest(const std::string& bundle_dir) {
  if (!is_dir(bundle_dir)) {
    throw Error(ErrorKind::Bundle, bundle_dir + " is not a bundle folder");
  }
  const std::string path = join_path(bundle_dir, "manifest.json");
  if (!is_file(path)) {
    throw Error(ErrorKind::Bundle, bundle_dir + " has no manifest.json");
  }
  Reader r{path};
  json doc;
  try {
    doc = json::parse(read_file(path));
  } catch (const json::parse_error& e) {
    throw r.bad(std::string("not valid JSON: ") + e.what());
  }
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != kFormat) {
    throw r.bad(std::string("not an ") + kFormat + " manifest");
  }
  if (!doc.contains("version") || doc["version"] != kVersion) {
    throw r.bad("manifest version " + (doc.contains("version") ? doc["version"].dump() : std::string("none")) +
                "; this runtime reads " + std::to_string(kVersion));
  }
  Manifest m;
  m.bundle_dir = bundle_dir;
  try {
    m.target = r.str(doc, "target", "the manifest");
    if (m.target != "android") {
      throw Error(ErrorKind::Bundle, bundle_dir + " is an " + m.target + " bundle; the ExecuTorch runtime runs android bundles");
    }
    const json& res = r.at(doc, "resolution", "the manifest");
    if (!res.is_array() || res.size() != 2) {
      throw r.bad("'resolution' is not [height, width]");
    }
    m.height = res[0].get<int64_t>();
    m.width = res[1].get<int64_t>();
    const Resolution fallback{m.height, m.width};
    m.resolutions.push_back(fallback);
    if (doc.contains("resolutions") && !doc["resolutions"].is_null()) {
      if (!doc["resolutions"].is_array() || doc["resolutions"].empty()) {
        throw r.bad("'resolutions' is not a non-empty list of [height, width]");
      }
      m.resolutions.clear();
      for (const json& each : doc["resolutions"]) {
        m.resolutions.push_back(r.resolution(each, "an entry of 'resolutions'"));
      }
      if (!(m.resolutions.front() == fallback)) {
        throw r.bad("'resolutions' does not start with 'resolution' (the default)");
      }
    }
    // an entry without "resolution" is at the default one (bundles written before there were several)
    auto at_default = [&](MethodEntry& e) {
      if (e.height == 0) {
        e.height = fallback.height;
        e.width = fallback.width;
      }
    };
    const json& sched = r.at(doc, "scheduler", "the manifest");
    m.steps = static_cast<int>(r.number(sched, "steps", "scheduler"));
    m.shift = r.number(sched, "shift", "scheduler");
    m.guidance = r.number(sched, "guidance_scale", "scheduler");
    if (doc.contains("latent") && doc["latent"].is_object()) {
      const json& lat = doc["latent"];
      m.scaling_factor = lat.value("scaling_factor", 1.0);
      m.shift_factor = lat.value("shift_factor", 0.0);
    }
    m.cfg_batch = doc.value("cfg_batch", false);
    const json& points = r.at(doc, "operating_points", "the manifest");
    if (!points.is_array() || points.empty()) {
      throw r.bad("'operating_points' is empty");
    }
    for (const json& p : points) {
      PointEntry e;
      e.name = r.str(p, "name", "an operating point");
      r.method(p, e, "operating point " + e.name);
      e.compression_ratio = p.value("compression_ratio", 0);
      e.depth = p.contains("depth") && p["depth"].is_string() ? p["depth"].get<std::string>() : "";
      e.gflops = p.value("gflops", 0.0);
      at_default(e);
      m.all_points.push_back(e);
    }
    m.default_point = doc.contains("default_operating_point") && doc["default_operating_point"].is_string()
                          ? doc["default_operating_point"].get<std::string>()
                          : m.all_points.front().name;
    if (doc.contains("decoder") && !doc["decoder"].is_null()) {
      MethodEntry d;
      r.method(doc["decoder"], d, "decoder");
      at_default(d);
      m.decoders.push_back(d);
    }
    if (doc.contains("decoders") && !doc["decoders"].is_null()) {
      if (!doc["decoders"].is_array()) {
        throw r.bad("'decoders' is not a list");
      }
      for (const json& each : doc["decoders"]) {
        MethodEntry d;
        r.method(each, d, "a decoder");
        at_default(d);
        m.decoders.push_back(d);
      }
    }
    if (doc.contains("text_encoder") && !doc["text_encoder"].is_null()) {
      const json& te = doc["text_encoder"];
      MethodEntry t;
      r.method(te, t, "text_encoder");
      m.text_encoder = t;
      const json& tok = r.at(te, "tokenizer", "text_encoder");
      TokenizerSpec spec;
      try {
        spec = parse_tokenizer_spec(tok.dump());
      } catch (const Error& e) {
        throw r.bad(std::string("text_encoder's tokenizer: ") + e.what());
      }
      m.tokenizer = spec;
    }
    if (doc.contains("schedules") && !doc["schedules"].is_null()) {
      const json& named = doc["schedules"];
      if (!named.is_object()) {
        throw r.bad("'schedules' is not an object of named schedules");
      }
      for (const auto& [name, phases] : named.items()) {
        if (!phases.is_array() || phases.empty()) {
          throw r.bad("schedule '" + name + "' is not a non-empty list of phases");
        }
        double total = 0.0;
        for (const json& phase : phases) {
          const double share = r.number(phase, "share", "schedule " + name);
          if (!(share > 0)) {
            throw r.bad("schedule '" + name + "' has a share that is not above 0");
          }
          m.schedules[name].push_back({r.str(phase, "point", "schedule " + name), share});
          total += share;
        }
        if (std::fabs(total - 1.0) > 1e-6) {
          throw r.bad("schedule '" + name + "' has shares summing to " + std::to_string(total) + ", not 1");
        }
      }
    }
    for (const json& f : r.at(doc, "files", "the manifest")) {
      m.files.push_back({r.str(f, "path", "a file entry"), static_cast<int64_t>(r.number(f, "bytes", "a file entry"))});
    }
  } catch (const json::exception& e) {
    throw r.bad(std::string("unexpected value: ") + e.what());
  }
  for (const FileEntry& f : m.files) {
    const int64_t size = file_size(m.path_of(f.path));
    if (size < 0) {
      throw Error(ErrorKind::Bundle, bundle_dir + ": " + f.path + " is missing");
    }
    if (size != f.bytes) {
      throw Error(ErrorKind::Bundle, bundle_dir + ": " + f.path + " has " + std::to_string(size) +
                                         " bytes, the manifest says " + std::to_string(f.bytes) +
                                         " (truncated or replaced)");
    }
  }
  return m.at_resolution({m.height, m.width});
}

}  // namespace elasticdit
