//===- Npy.cpp - NumPy .npy file reading and writing ----------------------===//

#include "moert/Npy.h"

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

using namespace moert;

int64_t NpyArray::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int NpyArray::elementSize(const std::string &dtype) {
  if (dtype == "<f4" || dtype == "<i4")
    return 4;
  if (dtype == "<f8" || dtype == "<i8")
    return 8;
  if (dtype == "<f2")
    return 2;
  if (dtype == "|i1" || dtype == "|b1" || dtype == "|u1")
    return 1;
  return 0;
}

/// "[2,3]" for the messages.
static std::string shapeText(const std::vector<int64_t> &shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    r += (i ? "," : "") + std::to_string(shape[i]);
  return r + "]";
}

/// Finds the value text following `'key':` in the header dictionary.
static bool findValue(const std::string &header, const std::string &key,
                      std::string &value) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos)
    return false;
  size_t colon = header.find(':', k);
  if (colon == std::string::npos)
    return false;
  value = header.substr(colon + 1);
  size_t start = value.find_first_not_of(' ');
  value = start == std::string::npos ? "" : value.substr(start);
  return true;
}

bool moert::parseNpy(const char *data, size_t size, const std::string &name,
                     NpyArray &out, std::string &error) {
  auto bad = [&](const std::string &why) {
    error = name + ": not a valid .npy file: " + why;
    return false;
  };
  if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0)
    return bad("missing the \\x93NUMPY magic");
  unsigned major = uint8_t(data[6]);
  size_t headerLen, offset;
  if (major == 1) {
    headerLen = uint8_t(data[8]) | (size_t(uint8_t(data[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12)
      return bad("truncated header");
    headerLen = 0;
    for (int i = 0; i < 4; ++i)
      headerLen |= size_t(uint8_t(data[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return bad("format version " + std::to_string(major) + " is unknown");
  }
  if (offset + headerLen > size)
    return bad("truncated header");
  std::string header(data + offset, headerLen);
  std::string descr, fortran, shape;
  if (!findValue(header, "descr", descr) ||
      !findValue(header, "fortran_order", fortran) ||
      !findValue(header, "shape", shape))
    return bad("header lacks descr, fortran_order or shape");
  if (descr.size() < 2 || descr[0] != '\'' ||
      descr.find('\'', 1) == std::string::npos)
    return bad("malformed descr");
  out.dtype = descr.substr(1, descr.find('\'', 1) - 1);
  if (fortran.compare(0, 4, "True") == 0)
    return bad("Fortran-order arrays are not supported (use C order)");
  int esize = NpyArray::elementSize(out.dtype);
  if (esize == 0)
    return bad("dtype '" + out.dtype + "' is not supported");
  out.shape.clear();
  size_t open = shape.find('('), close = shape.find(')');
  if (open == std::string::npos || close == std::string::npos)
    return bad("malformed shape");
  std::stringstream dims(shape.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(dims, item, ',')) {
    size_t s = item.find_first_not_of(' ');
    if (s == std::string::npos)
      continue;
    size_t used = 0;
    int64_t dim = -1;
    try {
      dim = std::stoll(item.substr(s), &used);
    } catch (...) {
      return bad("malformed shape");
    }
    if (item.find_first_not_of(' ', s + used) != std::string::npos)
      return bad("malformed shape");
    if (dim < 0)
      return bad("negative dim " + std::to_string(dim) + " in its shape");
    out.shape.push_back(dim);
  }
  // The byte size, checked without overflow before anything is allocated:
  // a header may declare any shape (2^32 x 2^32 floats wrap 64 bits to 0).
  size_t dataStart = offset + headerLen;
  size_t avail = size - dataStart, bytes = size_t(esize);
  bool zero = false;
  for (int64_t d : out.shape)
    zero |= d == 0;
  for (int64_t d : out.shape) {
    if (zero)
      break;
    if (bytes > SIZE_MAX / size_t(d))
      return bad("its shape " + shapeText(out.shape) +
                 " needs more than 2^64 bytes (the file holds " +
                 std::to_string(avail) + ")");
    bytes *= size_t(d);
  }
  if (zero)
    bytes = 0;
  if (avail < bytes)
    return bad("holds " + std::to_string(size - dataStart) + " data bytes, " +
               std::to_string(bytes) + " expected for its shape");
  out.data.assign(data + dataStart, data + dataStart + bytes);
  return true;
}

bool moert::readNpy(const std::string &path, NpyArray &out,
                    std::string &error) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    error = path + ": cannot open (" + std::strerror(errno) + ")";
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = path + ": not a regular file (" +
            (S_ISDIR(st.st_mode) ? "a directory" : "a device or pipe") +
            "; an .npy file expected)";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open";
    return false;
  }
  std::vector<char> buf;
  try {
    buf.assign(std::istreambuf_iterator<char>(in),
               std::istreambuf_iterator<char>());
  } catch (const std::exception &e) {
    error = path + ": cannot read (" + e.what() + ")";
    return false;
  }
  if (in.bad()) {
    error = path + ": cannot read";
    return false;
  }
  return parseNpy(buf.data(), buf.size(), path, out, error);
}

std::string moert::npyImage(const NpyArray &array) {
  // numpy's own spelling of the shape: "()", "(7,)", "(2, 3)".
  std::string shape = "(";
  for (size_t i = 0; i < array.shape.size(); ++i)
    shape += (i ? ", " : "") + std::to_string(array.shape[i]);
  shape += array.shape.size() == 1 ? ",)" : ")";
  std::string header = "{'descr': '" + array.dtype +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that the data starts on a 64-byte boundary, ending in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  uint16_t len = uint16_t(header.size());
  out += char(len & 0xff);
  out += char(len >> 8);
  out += header;
  out.append(array.data.data(), array.data.size());
  return out;
}

uint32_t moert::zipCrc32(const char *data, size_t size) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i)
    c = table[(c ^ uint8_t(data[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

namespace {
/// Appends `v` little-endian.
template <typename T> void put(std::string &out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out += char((uint64_t(v) >> (8 * i)) & 0xff);
}
} // namespace

bool moert::npzImage(
    const std::vector<std::pair<std::string, NpyArray>> &arrays,
    std::string &out, std::string &error) {
  // Without zip64 every member, offset and count must fit 32 (16) bits.
  if (arrays.size() >= 0xFFFF) {
    error = std::to_string(arrays.size()) + " arrays are too many for a .npz";
    return false;
  }
  out.clear();
  std::string central;
  for (auto &[name, array] : arrays) {
    std::string member = name + ".npy", data = npyImage(array);
    if (data.size() >= 0xFFFFFFFFull ||
        out.size() + data.size() + 30 + member.size() >= 0xFFFFFFFFull) {
      error = "array '" + name + "' is too large for a .npz (4 GiB)";
      return false;
    }
    uint32_t crc = zipCrc32(data.data(), data.size());
    uint32_t offset = uint32_t(out.size()), size = uint32_t(data.size());
    put<uint32_t>(out, 0x04034b50); // local file header
    put<uint16_t>(out, 20);         // version needed
    put<uint16_t>(out, 0);          // flags
    put<uint16_t>(out, 0);          // stored
    put<uint16_t>(out, 0);          // time
    put<uint16_t>(out, 0x21);       // date 1980-01-01
    put<uint32_t>(out, crc);
    put<uint32_t>(out, size);
    put<uint32_t>(out, size);
    put<uint16_t>(out, uint16_t(member.size()));
    put<uint16_t>(out, 0); // extra
    out += member;
    out += data;
    put<uint32_t>(central, 0x02014b50); // central directory entry
    put<uint16_t>(central, 20);         // version made by
    put<uint16_t>(central, 20);         // version needed
    put<uint16_t>(central, 0);
    put<uint16_t>(central, 0);
    put<uint16_t>(central, 0);
    put<uint16_t>(central, 0x21);
    put<uint32_t>(central, crc);
    put<uint32_t>(central, size);
    put<uint32_t>(central, size);
    put<uint16_t>(central, uint16_t(member.size()));
    put<uint16_t>(central, 0); // extra
    put<uint16_t>(central, 0); // comment
    put<uint16_t>(central, 0); // disk
    put<uint16_t>(central, 0); // internal attributes
    put<uint32_t>(central, 0); // external attributes
    put<uint32_t>(central, offset);
    central += member;
  }
  if (out.size() + central.size() >= 0xFFFFFFFFull) {
    error = "the arrays are too large for a .npz (4 GiB)";
    return false;
  }
  uint32_t centralOffset = uint32_t(out.size());
  out += central;
  put<uint32_t>(out, 0x06054b50); // end of central directory
  put<uint16_t>(out, 0);
  put<uint16_t>(out, 0);
  put<uint16_t>(out, uint16_t(arrays.size()));
  put<uint16_t>(out, uint16_t(arrays.size()));
  put<uint32_t>(out, uint32_t(central.size()));
  put<uint32_t>(out, centralOffset);
  put<uint16_t>(out, 0);
  return true;
}

static bool writeBytes(const std::string &path, const std::string &bytes,
                       std::string &error) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    error = path + ": cannot open for writing: " + std::strerror(errno);
    return false;
  }
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) {
    error = path + ": write failed: " + std::strerror(errno);
    return false;
  }
  return true;
}

bool moert::writeNpy(const std::string &path, const NpyArray &array,
                     std::string &error) {
  return writeBytes(path, npyImage(array), error);
}

bool moert::writeNpz(
    const std::string &path,
    const std::vector<std::pair<std::string, NpyArray>> &arrays,
    std::string &error) {
  std::string bytes;
  if (!npzImage(arrays, bytes, error)) {
    error = path + ": " + error;
    return false;
  }
  return writeBytes(path, bytes, error);
}
