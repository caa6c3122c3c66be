// The tiny zoo (bench/zoo/tiny_zoo.h) under the test helpers' namespace.
#ifndef TWIN_TESTS_TESTING_TINY_MODELS_H_
#define TWIN_TESTS_TESTING_TINY_MODELS_H_

#include "bench/zoo/tiny_zoo.h"

namespace twin::testing {
using zoo::BuildTinyZoo;
using zoo::MakeTinyModel;
using zoo::MakeTinyTaskData;
using zoo::TinyAccuracy;
using zoo::TinyModelOptions;
using zoo::TinyTaskData;
using zoo::TinyZoo;
using zoo::TinyZooOptions;
using zoo::TrainTinyModel;
}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_TINY_MODELS_H_
