// A TorchScript module of a Hugging Face encoder (BERT, RoBERTa, XLM-RoBERTa) whose parameters
// carry the checkpoint's names: nested submodules, so that
// "roberta.encoder.layer.0.attention.self.query.weight" is a real path and
// ScriptModel::NamedParameters / SetParameter address it. It follows the model convention
// (docs/model-convention.md): embed(input_ids, attention_mask) -> [B, d] (BERT: the pooler
// output; RoBERTa: h[:, 0]), and with a classification head forward(...) -> [B, C] and
// classify(features) -> [B, C]; also hidden(...) -> [B, L, d], and the int attribute
// vocab_size.
//
// Its TorchScript source is written on its own, not by calling the native forward
// (hf_encoder.h), so each checks the other: it is the parity reference of the native families,
// and it lets the TorchScript (fused) serving path serve an HF checkpoint.
//
//   ASSIGN_OR_RETURN(HfModel model, LoadHfModel(dir));
//   std::map<std::string, at::Tensor> weights = model.body;
//   weights.insert(model.head.begin(), model.head.end());
//   ASSIGN_OR_RETURN(torch::jit::Module m, MakeHfScriptModule(model.encoder->config(), weights));
//   m.save("architecture.pt");
//
// Thread-safety: a pure function; the module it returns is the caller's.
#ifndef TWIN_CORE_MODEL_HF_SCRIPT_H_
#define TWIN_CORE_MODEL_HF_SCRIPT_H_

#include <torch/script.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/hf_config.h"

namespace twin {

// `weights`: normalised names (hf_checkpoint.h) -> tensors; every one becomes a parameter
// (shared, not copied). A tensor the source reads that `weights` lacks is an error naming it.
absl::StatusOr<torch::jit::Module> MakeHfScriptModule(
    const HfEncoderConfig& config, const std::map<std::string, at::Tensor>& weights);

}  // namespace twin

#endif  // TWIN_CORE_MODEL_HF_SCRIPT_H_
