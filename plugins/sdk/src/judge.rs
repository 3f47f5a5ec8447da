//! Judge plugins: a language model behind the plugin (an OpenAI-compatible endpoint, say)
//! completes the prompts of the host's LLM-as-judge.

pub use crate::types::Message;

/// A completion backend. Implement it on a unit struct and export it with
/// [`export_judge!`](crate::export_judge).
pub trait Judge {
    /// One completion per prompt, in order, each at most `max_tokens` tokens.
    fn complete(prompts: Vec<Vec<Message>>, max_tokens: u32) -> Result<Vec<String>, String>;
}

/// Exports a type that implements [`Judge`] as this component's judge backend.
#[macro_export]
macro_rules! export_judge {
    ($ty:ident) => {
        const _: () = {
            impl $crate::bindings::judge::exports::research::plugins::judge::Guest for $ty {
                fn complete(
                    prompts: ::std::vec::Vec<::std::vec::Vec<$crate::judge::Message>>,
                    max_tokens: u32,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<::std::string::String>,
                    ::std::string::String,
                > {
                    <$ty as $crate::judge::Judge>::complete(prompts, max_tokens)
                }
            }
            $crate::bindings::judge::__export_judge_world!($ty with_types_in $crate::bindings::judge);
        };
    };
}
