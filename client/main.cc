// iommuctl: the operator CLI of iommu-broker. Wiring only; see
// client/commands.h for the program and client/args.h for the grammar.
#include <iostream>

#include "client/channel.h"
#include "client/commands.h"

int main(int argc, char** argv) {
  return iommu::client::RunIommuctl(argc, argv, std::cout, std::cerr,
                                    iommu::client::GrpcStubFactory());
}
