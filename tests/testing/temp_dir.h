// A temporary directory removed (recursively) when the object goes out of scope.
//
// Thread-safety: not thread-safe; one per test.
#ifndef TWIN_TESTS_TESTING_TEMP_DIR_H_
#define TWIN_TESTS_TESTING_TEMP_DIR_H_

#include <string>

namespace twin::testing {

class TempDir {
 public:
  TempDir();  // aborts the test binary if mkdtemp fails
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Whole-file helpers for tests.
std::string ReadFileOrDie(const std::string& path);
void WriteFileOrDie(const std::string& path, const std::string& bytes);
bool FileExists(const std::string& path);

// Path of a project binary (build/bin/<name>), found next to the test binary (build/tests/).
std::string ProjectBinary(const std::string& name);

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_TEMP_DIR_H_
