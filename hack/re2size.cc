// re2size prints RE2's program size (what Envoy compares with
// re2.max_program_size.error_level) for each regular expression on stdin, one per line.
#include <re2/re2.h>
#include <iostream>
#include <string>
int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    RE2 re(line, RE2::Quiet);
    if (!re.ok()) { std::cout << "ERR\t" << line << "\n"; continue; }
    std::cout << re.ProgramSize() << "\t" << line << "\n";
  }
}
