//===- Npy.cpp - NumPy .npy file reading and writing ----------------------===//

#include "moert/Npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

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
  if (descr.size() < 2 || descr[0] != '\'')
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
    try {
      out.shape.push_back(std::stoll(item.substr(s)));
    } catch (...) {
      return bad("malformed shape");
    }
  }
  size_t bytes = size_t(out.numElements()) * size_t(esize);
  size_t dataStart = offset + headerLen;
  if (size - dataStart < bytes)
    return bad("holds " + std::to_string(size - dataStart) + " data bytes, " +
               std::to_string(bytes) + " expected for its shape");
  out.data.assign(data + dataStart, data + dataStart + bytes);
  return true;
}

bool moert::readNpy(const std::string &path, NpyArray &out,
                    std::string &error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open";
    return false;
  }
  std::vector<char> buf((std::istreambuf_iterator<char>(in)),
                        std::istreambuf_iterator<char>());
  return parseNpy(buf.data(), buf.size(), path, out, error);
}

bool moert::writeNpy(const std::string &path, const NpyArray &array,
                     std::string &error) {
  std::string header = "{'descr': '" + array.dtype +
                       "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < array.shape.size(); ++i)
    header += std::to_string(array.shape[i]) + ", ";
  if (array.shape.size() > 1)
    header.erase(header.size() - 1); // "(2, 3)" not "(2, 3, )"
  if (array.shape.size() > 1)
    header.back() = ')';
  else
    header += ")";
  header += ", }";
  // Pad so that the data starts on a 64-byte boundary, ending in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) {
    error = path + ": cannot open for writing";
    return false;
  }
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = uint16_t(header.size());
  char lenBytes[2] = {char(len & 0xff), char(len >> 8)};
  out.write(lenBytes, 2);
  out.write(header.data(), std::streamsize(header.size()));
  out.write(array.data.data(), std::streamsize(array.data.size()));
  if (!out) {
    error = path + ": write failed";
    return false;
  }
  return true;
}
